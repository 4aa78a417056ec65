/* console.h — the web console's files, embedded in dynd at build time (clients/console/: the
 * Makefile runs clients/console/embed.mjs over index.html, app.js, style.css and uPlot's dist
 * files into $(BUILD)/gen/console_assets.c). Served by api/console.c at / and /console/<name>. */
#ifndef API_CONSOLE_H
#define API_CONSOLE_H

#include <stddef.h>

typedef struct api_console_file {
    const char *name;          /* base name: "index.html", "app.js", ... */
    const char *type;          /* media type with charset */
    const unsigned char *data; /* static, never freed */
    size_t len;
    const char *etag;          /* W/"<hex of the SHA-256 of data>" */
} api_console_file;

/* The table (static; API_CONSOLE_NFILES entries), generated. */
extern const api_console_file API_CONSOLE_FILES[];
extern const int API_CONSOLE_NFILES;

/* The embedded file named `name` (exact match), NULL when there is none. The result is static. */
const api_console_file *api_console_find(const char *name);

#endif
