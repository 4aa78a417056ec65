/* log.h — structured logs on stderr: one JSON object per line (or "ts level msg k=v" text).
 *
 * Process-wide state (level, format) set once at start and on SIGHUP; logging is thread-safe
 * (each line is built whole, then written under a mutex in one write). Fields come from a JSON
 * object so request ids, models and statuses are machine-readable.
 */
#ifndef SRV_LOG_H
#define SRV_LOG_H

#include <jansson.h>

typedef enum { SRV_LOG_DEBUG, SRV_LOG_INFO, SRV_LOG_WARN, SRV_LOG_ERROR, SRV_LOG_LEVEL_COUNT } srv_log_level;
typedef enum { SRV_LOG_JSON, SRV_LOG_TEXT, SRV_LOG_FORMAT_COUNT } srv_log_format;

void srv_log_setup(srv_log_level level, srv_log_format format);
int srv_log_enabled(srv_log_level level);

/* Logs `msg` with the fields of `fields` (an object, may be NULL; the reference is stolen, so
 * callers can write srv_log(..., json_pack(...))). */
void srv_log(srv_log_level level, const char *msg, json_t *fields);

/* printf-style message without fields. */
void srv_logf(srv_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
