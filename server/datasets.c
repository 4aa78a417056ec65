/* datasets.c — the user's data sets in data_dir. See datasets.h for the rules.
 *
 * An import never writes outside its temporary directory until the final rename: every entry
 * is read into memory (at most max_entry_bytes), checked, decoded once, then written to
 * tmp/in/<index>; the layout is decided once all entries are known, each file renamed to
 * tmp/out/[<split>/]<class>/<name>, the manifest written, the file system synced, and tmp/out
 * renamed to data_dir/<name>. Entry names are never joined to a path before they have been
 * normalized (no "..", no absolute path) and only regular files are ever created, so a hostile
 * archive cannot reach outside the temporary directory.
 */
#include "server/datasets.h"

#include "io/dataset.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "io/file.h"
#include "server/datasets_impl.h"
#include "server/repository.h"

#define MANIFEST ".dataset.json"
#define UNLABELED DYN_DATASET_UNLABELED
#define MAX_CLASSES 256          /* what the engine's image-folder loader accepts */
#define STALE_TMP_S (24 * 3600)  /* temporaries of a crashed import are swept after this */

#define derr srv_err_set

void srv_dataset_limits_get(const srv_config *cfg, srv_dataset_limits *lim) {
    memset(lim, 0, sizeof *lim);
    lim->max_entries = cfg->dataset_max_entries;
    lim->max_bytes = cfg->dataset_max_bytes;
    lim->max_ratio = cfg->dataset_max_ratio;
    lim->max_entry_bytes = cfg->dataset_max_entry_bytes;
    lim->max_path = cfg->dataset_max_path;
    lim->max_depth = cfg->dataset_max_depth;
    lim->image.max_width = cfg->max_image_width;
    lim->image.max_height = cfg->max_image_height;
    lim->image.max_pixels = cfg->max_image_pixels;
    lim->image.max_bytes = (size_t)cfg->dataset_max_entry_bytes;
}

int srv_dataset_builtin(const char *name) {
    return name && (!strcmp(name, "mnist") || !strcmp(name, "fashion") ||
                    !strcmp(name, "fashion-mnist"));
}

int srv_dataset_name_check(const char *name, srv_dataset_err *e) {
    if (!srv_repo_name_valid(name)) {
        derr(e, 400, "invalid_name", "data set names are 1-64 characters of A-Z a-z 0-9 _ . - "
                                     "and do not start with '.'");
        return -1;
    }
    if (srv_dataset_builtin(name)) {
        derr(e, 403, "builtin_dataset", "'%s' is a built-in data set; choose another name", name);
        return -1;
    }
    return 0;
}

/* ---- entry paths and layout (pure; unit-tested) ---- */

/* 1 when s is valid UTF-8 (no overlong forms, surrogates or code points past U+10FFFF). */
static int utf8_valid(const unsigned char *s) {
    while (*s) {
        unsigned c = *s++;
        int more = c < 0x80 ? 0 : (c & 0xe0) == 0xc0 ? 1 : (c & 0xf0) == 0xe0 ? 2
                 : (c & 0xf8) == 0xf0 ? 3 : -1;
        if (more < 0 || (more == 1 && c < 0xc2)) return 0;
        unsigned cp = c & (0x3f >> more);
        for (int i = 0; i < more; i++, s++) {
            if ((*s & 0xc0) != 0x80) return 0;
            cp = (cp << 6) | (*s & 0x3f);
        }
        if ((more == 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
            (more == 3 && (cp < 0x10000 || cp > 0x10ffff)))
            return 0;
    }
    return 1;
}

/* An entry name fit for a JSON message: itself when valid UTF-8, else with every byte outside
 * printable ASCII replaced by '?'; cut to n - 1 bytes. */
static const char *msg_name(const char *raw, char *buf, size_t n) {
    snprintf(buf, n, "%s", raw ? raw : "");
    if (!utf8_valid((const unsigned char *)buf) || strlen(raw ? raw : "") >= n)
        for (char *p = buf; *p; p++)
            if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f) *p = '?';
    return buf;
}

int srv__dataset_path_norm(const char *in, int max_path, int max_depth, char *out, size_t n,
                           int *hidden, const char **why) {
    *hidden = 0;
    *why = NULL;
    size_t len = strlen(in), k = 0;
    int depth = 0;
    if (len > (size_t)max_path) return *why = "the name is longer than dataset_max_path", -1;
    if (in[0] == '/') return *why = "an absolute path", -1;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c < 0x20 || c == 0x7f) return *why = "a control character in the name", -1;
        if (c == '\\') return *why = "a backslash in the name", -1;
    }
    if (!utf8_valid((const unsigned char *)in)) return *why = "a name that is not UTF-8", -1;
    for (const char *p = in; *p;) {
        const char *s = strchr(p, '/');
        size_t l = s ? (size_t)(s - p) : strlen(p);
        if (l == 2 && p[0] == '.' && p[1] == '.') return *why = "a '..' component", -1;
        if (l > 255) return *why = "a path component longer than 255 bytes", -1;
        if (l && !(l == 1 && p[0] == '.')) {
            if (p[0] == '.' || (l == 8 && !memcmp(p, "__MACOSX", 8))) *hidden = 1;
            if (++depth > max_depth) return *why = "more folders than dataset_max_depth", -1;
            if (k + l + 2 > n) return *why = "the name is too long", -1;
            if (k) out[k++] = '/';
            memcpy(out + k, p, l);
            k += l;
        }
        p = s ? s + 1 : p + l;
    }
    if (n) out[k < n ? k : n - 1] = 0;
    if (*hidden || depth == 0) return 0;
    return 1;
}

static int ncomp(const char *p) {
    int n = 1;
    for (; *p; p++) n += *p == '/';
    return n;
}

/* Component i of p into buf (empty when absent). */
static const char *comp(const char *p, int i, char *buf, size_t n) {
    for (; i > 0 && p; i--) {
        p = strchr(p, '/');
        if (p) p++;
    }
    if (!p) p = "";
    size_t l = strcspn(p, "/");
    if (l >= n) l = n - 1;
    memcpy(buf, p, l);
    buf[l] = 0;
    return buf;
}

static int is_split(const char *s) { return !strcmp(s, "train") || !strcmp(s, "test"); }

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Distinct values of component `i` of the paths whose component 0 is `top` (NULL: all) into a
 * sorted array (n returned; the strings are malloc'd). -1 on ENOMEM. */
static int distinct(char *const *paths, int n, int off, const char *top, int i, char ***out) {
    char **v = malloc(sizeof(char *) * (size_t)(n ? n : 1));
    int m = 0;
    char buf[256];
    if (!v) return -1;
    for (int k = 0; k < n; k++) {
        if (top && strcmp(comp(paths[k], off, buf, sizeof buf), top)) continue;
        comp(paths[k], off + i, buf, sizeof buf);
        int seen = 0;
        for (int j = 0; j < m && !seen; j++) seen = !strcmp(v[j], buf);
        if (!seen && !(v[m++] = strdup(buf))) {
            for (int j = 0; j < m - 1; j++) free(v[j]);
            free(v);
            return -1;
        }
    }
    qsort(v, (size_t)m, sizeof *v, cmp_str);
    *out = v;
    return m;
}

static void strs_free(char **v, int n) {
    for (int i = 0; v && i < n; i++) free(v[i]);
    free(v);
}

int srv__dataset_layout(char *const *paths, int n, srv__ds_layout *lay, char *why, size_t whyn) {
    memset(lay, 0, sizeof *lay);
    if (n <= 0) return snprintf(why, whyn, "no images"), -1;
    char a[256], b[256];
    /* one wrapper folder around everything (not train/ or test/) */
    int strip = ncomp(paths[0]) >= 2 && !is_split(comp(paths[0], 0, a, sizeof a));
    for (int k = 1; strip && k < n; k++)
        strip = ncomp(paths[k]) >= 2 && !strcmp(comp(paths[k], 0, b, sizeof b), a);
    lay->strip = strip;
    int d0 = ncomp(paths[0]) - strip, splits = 0, others = 0;
    for (int k = 0; k < n; k++) {
        if (ncomp(paths[k]) - strip != d0) {
            snprintf(why, whyn, "images at different depths ('%.200s' and '%.200s'): put every "
                     "image in a class folder (labeled) or none in a folder (unlabeled)",
                     paths[0], paths[k]);
            return -1;
        }
        if (d0 >= 2) {
            if (is_split(comp(paths[k], strip, a, sizeof a))) splits = 1;
            else others = 1;
        }
    }
    if (d0 > 3 || (d0 == 3 && !splits)) {
        snprintf(why, whyn, "'%.200s' is too deep: the layouts are <class>/<image>, "
                 "train|test/<class>/<image>, <image> and train|test/<image>", paths[0]);
        return -1;
    }
    if (splits && others) {
        snprintf(why, whyn, "train/ or test/ beside other top-level folders: either only "
                 "train/ and test/ (each holding the class folders) or only class folders");
        return -1;
    }
    lay->splits = splits;
    lay->labeled = d0 == 3 || (d0 == 2 && !splits);
    if (!splits) return 0;
    char **tops = NULL;
    int nt = distinct(paths, n, strip, NULL, 0, &tops);
    if (nt < 0) return snprintf(why, whyn, "out of memory"), -1;
    int has_train = 0;
    for (int i = 0; i < nt; i++) has_train |= !strcmp(tops[i], "train");
    lay->has_test = nt == 2 || !has_train;
    strs_free(tops, nt);
    if (!has_train) return snprintf(why, whyn, "a test/ split needs a train/ split"), -1;
    if (!lay->labeled || !lay->has_test) return 0;
    char **tr = NULL, **te = NULL;
    int ntr = distinct(paths, n, strip, "train", 1, &tr);
    int nte = ntr < 0 ? -1 : distinct(paths, n, strip, "test", 1, &te);
    int same = ntr >= 0 && nte == ntr;
    for (int i = 0; same && i < ntr; i++) same = !strcmp(tr[i], te[i]);
    if (ntr < 0 || nte < 0) snprintf(why, whyn, "out of memory");
    else if (!same)
        snprintf(why, whyn, "train/ has %d classes and test/ %d, not the same folders: the "
                 "loader numbers classes by name in each split", ntr, nte);
    strs_free(tr, ntr);
    strs_free(te, nte);
    return same ? 0 : -1;
}

int srv__dataset_place(const srv__ds_layout *lay, const char *path, char *split, size_t ns,
                       char *cls, size_t nc, char *base, size_t nb) {
    int i = lay->strip, d = ncomp(path) - lay->strip;
    int want = 1 + lay->splits + lay->labeled;
    if (d != want) return -1;
    char buf[512];
    const char *s = lay->splits ? comp(path, i++, buf, sizeof buf) : "";
    if ((size_t)snprintf(split, ns, "%s", s) >= ns) return -1;
    const char *c = lay->labeled ? comp(path, i++, buf, sizeof buf) : UNLABELED;
    if ((size_t)snprintf(cls, nc, "%s", c) >= nc) return -1;
    if ((size_t)snprintf(base, nb, "%s", comp(path, i, buf, sizeof buf)) >= nb) return -1;
    return 0;
}

/* ---- files ---- */

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f) {
    (void)st, (void)flag, (void)f;
    remove(p); /* best effort; a symbolic link is removed, never followed (FTW_PHYS) */
    return 0;
}

/* Removes path recursively without following symbolic links or leaving the file system. */
static void remove_tree(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0) return;
    if (!S_ISDIR(st.st_mode)) {
        unlink(path);
        return;
    }
    nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
}

/* Removes temporaries (".import-*", ".delete-*") of data_dir older than STALE_TMP_S: what a
 * crashed import or delete left. */
static void sweep_stale(const char *data_dir) {
    DIR *d = opendir(data_dir);
    if (!d) return;
    struct dirent *e;
    char p[1400];
    time_t now = time(NULL);
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, ".import-", 8) && strncmp(e->d_name, ".delete-", 8)) continue;
        snprintf(p, sizeof p, "%s/%s", data_dir, e->d_name);
        struct stat st;
        if (lstat(p, &st) == 0 && now - st.st_mtime > STALE_TMP_S) remove_tree(p);
    }
    closedir(d);
}

/* mkdir -p of rel under root (rel: '/'-separated, already normalized). 0 or -1 (errno). */
static int mkdirs(const char *root, const char *rel) {
    char p[2048];
    size_t rl = strlen(root);
    if (rl + strlen(rel) + 2 > sizeof p) return errno = ENAMETOOLONG, -1;
    memcpy(p, root, rl);
    p[rl] = '/';
    strcpy(p + rl + 1, rel);
    for (char *s = p + rl + 1;; s++) {
        if (*s == '/' || !*s) {
            char c = *s;
            *s = 0;
            if (mkdir(p, 0750) != 0 && errno != EEXIST) return -1;
            if (!c) break;
            *s = c;
        }
    }
    return 0;
}

static int has_image_ext(const char *n) {
    const char *dot = strrchr(n, '.');
    return dot && (!strcasecmp(dot, ".png") || !strcasecmp(dot, ".jpg") ||
                   !strcasecmp(dot, ".jpeg"));
}

static void iso_now(char *buf, size_t n) {
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* ---- import ---- */

typedef struct img_rec {
    char *path;     /* normalized entry path */
    int fmt;        /* dyn_image_format */
    long long bytes;
} img_rec;

typedef struct import_ctx {
    const srv_dataset_limits *lim;
    srv_dataset_err *e;
    char tmp[1200];
    img_rec *recs;
    int n, cap;
    long long entries, bytes, archive_bytes;
    long long skipped_hidden, skipped_other, dirs;
    unsigned char *buf;
    size_t bufcap;
} import_ctx;

static int storage_err(import_ctx *c, const char *what, int err) {
    derr(c->e, err == ENOSPC || err == EDQUOT ? 507 : 500, "storage_failed",
         "storing the data set failed (%s): %s", what, strerror(err));
    return -1;
}

/* Reads the current entry's data into c->buf, up to the limits. Returns its size, or -2 when
 * it is not a PNG / JPEG (the rest skipped), or -1 with c->e set. */
static long long entry_read(import_ctx *c, struct archive *a, const char *name, int *fmt) {
    const srv_dataset_limits *lim = c->lim;
    size_t n = 0;
    *fmt = DYN_IMAGE_UNKNOWN;
    for (;;) {
        if (n + 65536 > c->bufcap) {
            size_t cap = c->bufcap ? c->bufcap * 2 : 262144;
            unsigned char *b = realloc(c->buf, cap);
            if (!b) return derr(c->e, 500, "out_of_memory", "out of memory"), -1;
            c->buf = b;
            c->bufcap = cap;
        }
        la_ssize_t r = archive_read_data(a, c->buf + n, 65536);
        if (r < 0) {
            derr(c->e, 400, "bad_archive", "entry '%.200s' is damaged: %s", name,
                 archive_error_string(a) ? archive_error_string(a) : "read error");
            return -1;
        }
        n += (size_t)r;
        c->bytes += r;
        if (c->bytes > lim->max_bytes) {
            derr(c->e, 413, "dataset_too_large", "the images hold more than %lld bytes once "
                 "extracted (dataset_max_bytes)", lim->max_bytes);
            return -1;
        }
        if (c->bytes > lim->max_ratio * c->archive_bytes) {
            derr(c->e, 413, "expansion_ratio", "entry '%.200s': the archive expands more than "
                 "%lld times its %lld bytes (dataset_max_ratio): a decompression bomb?", name,
                 lim->max_ratio, c->archive_bytes);
            return -1;
        }
        if ((long long)n > lim->max_entry_bytes) {
            derr(c->e, 413, "entry_too_large", "entry '%.200s' is larger than %lld bytes "
                 "(dataset_max_entry_bytes)", name, lim->max_entry_bytes);
            return -1;
        }
        if (*fmt == DYN_IMAGE_UNKNOWN && (n >= 8 || r == 0)) {
            *fmt = dyn_image_detect(c->buf, n);
            if (*fmt == DYN_IMAGE_UNKNOWN) {
                archive_read_data_skip(a);
                return -2;
            }
        }
        if (r == 0) return (long long)n;
    }
}

static int rec_push(import_ctx *c, const char *path, int fmt, long long bytes) {
    if (c->n == c->cap) {
        int cap = c->cap ? c->cap * 2 : 256;
        img_rec *v = realloc(c->recs, sizeof *v * (size_t)cap);
        if (!v) return -1;
        c->recs = v;
        c->cap = cap;
    }
    if (!(c->recs[c->n].path = strdup(path))) return -1;
    c->recs[c->n].fmt = fmt;
    c->recs[c->n].bytes = bytes;
    c->n++;
    return 0;
}

/* One entry: checked, decoded, written to tmp/in/<index>. 0, or -1 with c->e. */
static int entry_take(import_ctx *c, struct archive *a, struct archive_entry *ent) {
    const srv_dataset_limits *lim = c->lim;
    const char *name = archive_entry_pathname(ent);
    if (!name) return derr(c->e, 400, "unsafe_entry", "an entry has no readable name"), -1;
    char rawbuf[208];
    const char *raw = msg_name(name, rawbuf, sizeof rawbuf); /* for messages */
    char path[4096];
    int hidden;
    const char *why;
    int ok = srv__dataset_path_norm(name, lim->max_path, lim->max_depth, path, sizeof path,
                                    &hidden, &why);
    if (ok < 0) return derr(c->e, 400, "unsafe_entry", "entry '%.200s' refused: %s", raw, why), -1;
    mode_t type = archive_entry_filetype(ent);
    if (archive_entry_hardlink(ent))
        return derr(c->e, 400, "unsafe_entry", "entry '%.200s' refused: a hard link", raw), -1;
    if (type == AE_IFLNK || archive_entry_symlink(ent))
        return derr(c->e, 400, "unsafe_entry", "entry '%.200s' refused: a symbolic link", raw), -1;
    if (type == AE_IFDIR) {
        c->dirs++;
        return 0;
    }
    if (type != AE_IFREG)
        return derr(c->e, 400, "unsafe_entry", "entry '%.200s' refused: not a regular file "
                    "(device, FIFO or socket)", raw), -1;
    if (ok == 0) { /* hidden, __MACOSX */
        c->skipped_hidden++;
        archive_read_data_skip(a);
        return 0;
    }
    if (archive_entry_size_is_set(ent) && archive_entry_size(ent) > lim->max_entry_bytes)
        return derr(c->e, 413, "entry_too_large", "entry '%.200s' is %lld bytes; the limit is "
                    "%lld (dataset_max_entry_bytes)", raw, (long long)archive_entry_size(ent),
                    lim->max_entry_bytes), -1;
    int fmt;
    long long n = entry_read(c, a, raw, &fmt);
    if (n == -2) {
        c->skipped_other++;
        return 0;
    }
    if (n < 0) return -1;
    dyn_image im;
    dyn_err ierr = {0};
    if (dyn_image_decode(c->buf, (size_t)n, &lim->image, &im, &ierr))
        return derr(c->e, 422, "bad_image", "entry '%.200s' is not a valid %s: %s", raw,
                    fmt == DYN_IMAGE_PNG ? "PNG" : "JPEG", ierr.msg), -1;
    dyn_image_free(&im);
    char fp[1300];
    snprintf(fp, sizeof fp, "%s/in/%d", c->tmp, c->n);
    int fd = open(fp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
    if (fd < 0) return storage_err(c, "create", errno);
    int bad = dyn_file_write_all(fd, c->buf, (size_t)n) ? errno : 0;
    close(fd);
    if (bad) return storage_err(c, "write", bad);
    if (rec_push(c, path, fmt, n)) return derr(c->e, 500, "out_of_memory", "out of memory"), -1;
    return 0;
}

/* Reads every entry of the archive into c. 0 or -1 with c->e. */
static int read_archive(import_ctx *c, const char *archive_path, const atomic_int *cancel) {
    struct archive *a = archive_read_new();
    if (!a) return derr(c->e, 500, "out_of_memory", "out of memory"), -1;
    archive_read_support_filter_gzip(a);
    archive_read_support_format_zip(a);
    archive_read_support_format_tar(a);
    archive_read_support_format_gnutar(a);
    int rc = 0;
    if (archive_read_open_filename(a, archive_path, 65536) != ARCHIVE_OK) {
        derr(c->e, 400, "not_an_archive", "the body is not a zip or (gzip-compressed) tar "
             "archive: %s", archive_error_string(a) ? archive_error_string(a) : "unreadable");
        rc = -1;
    }
    struct archive_entry *ent;
    while (!rc) {
        int r = archive_read_next_header(a, &ent);
        if (r == ARCHIVE_EOF) break;
        if (r < ARCHIVE_WARN) {
            const char *msg = archive_error_string(a) ? archive_error_string(a) : "read error";
            if (c->entries == 0)
                derr(c->e, 400, "not_an_archive", "the body is not a zip or (gzip-compressed) "
                     "tar archive: %s", msg);
            else
                derr(c->e, 400, "bad_archive", "the archive is damaged after %lld entries: %s",
                     c->entries, msg);
            rc = -1;
            break;
        }
        if (cancel && atomic_load(cancel)) {
            derr(c->e, 503, "shutting_down", "the server is shutting down; upload again later");
            rc = -1;
            break;
        }
        if (++c->entries > c->lim->max_entries) {
            derr(c->e, 413, "too_many_entries", "the archive has more than %lld entries "
                 "(dataset_max_entries)", c->lim->max_entries);
            rc = -1;
            break;
        }
        rc = entry_take(c, a, ent);
    }
    archive_read_free(a);
    return rc;
}

/* Moves every file into tmp/out by the layout and builds the manifest (new reference). */
static json_t *arrange(import_ctx *c, const char *name, const srv__ds_layout *lay) {
    char out[1300];
    snprintf(out, sizeof out, "%s/out", c->tmp);
    if (mkdir(out, 0750) != 0) return storage_err(c, "mkdir", errno), NULL;
    json_t *splits = json_object(), *classes = json_array();
    char split[256], cls[256], base[512], rel[1100], from[1300], to[2400];
    for (int i = 0; i < c->n; i++) {
        const img_rec *r = &c->recs[i];
        if (srv__dataset_place(lay, r->path, split, sizeof split, cls, sizeof cls, base,
                               sizeof base - 5)) {
            derr(c->e, 400, "bad_layout", "entry '%.200s' does not fit the layout", r->path);
            goto fail;
        }
        if (!has_image_ext(base)) strcat(base, r->fmt == DYN_IMAGE_PNG ? ".png" : ".jpg");
        snprintf(rel, sizeof rel, "%s%s%s", split, split[0] ? "/" : "", cls);
        if (mkdirs(out, rel)) {
            storage_err(c, "mkdir", errno);
            goto fail;
        }
        snprintf(from, sizeof from, "%s/in/%d", c->tmp, i);
        snprintf(to, sizeof to, "%s/%s/%s", out, rel, base);
        if (renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) != 0) {
            if (errno == EEXIST) {
                derr(c->e, 400, "bad_layout", "two entries are stored as '%.200s/%.200s' "
                     "(the same path twice, or a name without extension beside the same name "
                     "with one)", rel, base);
                goto fail;
            }
            storage_err(c, "rename", errno);
            goto fail;
        }
        const char *sk = split[0] ? split : "train";
        json_t *s = json_object_get(splits, sk);
        if (!s) {
            s = json_pack("{s:i, s:{}}", "images", 0, "classes");
            json_object_set_new(splits, sk, s);
        }
        json_object_set_new(s, "images", json_integer(json_integer_value(json_object_get(s, "images")) + 1));
        json_t *cc = json_object_get(s, "classes");
        json_object_set_new(cc, cls, json_integer(json_integer_value(json_object_get(cc, cls)) + 1));
    }
    json_t *cc = json_object_get(json_object_get(splits, "train"), "classes");
    if (json_object_size(cc) > MAX_CLASSES) {
        derr(c->e, 400, "bad_layout", "%zu class folders; the loader takes at most %d",
             json_object_size(cc), MAX_CLASSES);
        goto fail;
    }
    const char *k;
    json_t *v;
    json_object_foreach(cc, k, v) json_array_append_new(classes, json_string(k));
    /* byte order, as the loader numbers classes */
    size_t nc = json_array_size(classes);
    const char **names = malloc(sizeof(char *) * (nc ? nc : 1));
    if (!names) goto oom;
    for (size_t i = 0; i < nc; i++) names[i] = json_string_value(json_array_get(classes, i));
    qsort(names, nc, sizeof *names, cmp_str);
    json_t *sorted = json_array();
    for (size_t i = 0; i < nc; i++) json_array_append_new(sorted, json_string(names[i]));
    free(names);
    json_decref(classes);
    classes = sorted;
    long long bytes = 0;
    for (int i = 0; i < c->n; i++) bytes += c->recs[i].bytes;
    char when[32];
    iso_now(when, sizeof when);
    if (!lay->labeled) json_array_clear(classes);
    json_t *m = json_pack("{s:s, s:b, s:o, s:i, s:o, s:I, s:s, s:{s:I, s:I, s:I}}", "name", name,
                          "labeled", lay->labeled, "classes", classes, "images", c->n, "splits",
                          splits, "bytes", (json_int_t)bytes, "created", when, "skipped",
                          "hidden", (json_int_t)c->skipped_hidden, "not_image",
                          (json_int_t)c->skipped_other, "directories", (json_int_t)c->dirs);
    if (!m) goto oom_done;
    char *text = json_dumps(m, JSON_INDENT(2) | JSON_SORT_KEYS);
    dyn_err ferr = {0};
    char mp[1400];
    snprintf(mp, sizeof mp, "%s/" MANIFEST, out);
    int rc = text ? dyn_file_write_atomic(mp, text, strlen(text), 0640, &ferr) : DYN_ENOMEM;
    free(text);
    if (rc) {
        json_decref(m);
        derr(c->e, 500, "storage_failed", "writing the manifest failed: %s", ferr.msg);
        return NULL;
    }
    return m;
oom:
    json_decref(splits);
    json_decref(classes);
    derr(c->e, 500, "out_of_memory", "out of memory");
    return NULL;
oom_done: /* splits and classes were stolen by json_pack (even on failure) */
    derr(c->e, 500, "out_of_memory", "out of memory");
    return NULL;
fail:
    json_decref(splits);
    json_decref(classes);
    return NULL;
}

/* Renames tmp/out to data_dir/name (replacing an existing set when overwrite: the old one is
 * swapped into tmp/out in the same step and goes with tmp). 0 or -1 with c->e. */
static int place(import_ctx *c, const char *data_dir, const char *name, int overwrite) {
    char out[1300], dst[1200], old[1300];
    snprintf(out, sizeof out, "%s/out", c->tmp);
    snprintf(dst, sizeof dst, "%s/%s", data_dir, name);
    snprintf(old, sizeof old, "%s/old", c->tmp);
    int err = 0;
    if (renameat2(AT_FDCWD, out, AT_FDCWD, dst, RENAME_NOREPLACE) == 0) return 0;
    err = errno;
    if (err == EEXIST && overwrite) {
        if (renameat2(AT_FDCWD, out, AT_FDCWD, dst, RENAME_EXCHANGE) == 0) return 0;
        err = errno;
    }
    if (err == EINVAL || err == ENOSYS) { /* no renameat2 flags here: plain renames */
        err = access(dst, F_OK) == 0 ? EEXIST : 0;
        if (err == EEXIST && overwrite) err = rename(dst, old) == 0 ? 0 : errno;
        if (!err) err = rename(out, dst) == 0 ? 0 : errno;
        if (!err) return 0;
    }
    if (err == EEXIST || err == ENOTEMPTY) {
        derr(c->e, 409, "dataset_exists", "data set '%s' exists; add ?overwrite=true to "
             "replace it", name);
        return -1;
    }
    return storage_err(c, "rename into data_dir", err);
}

json_t *srv_dataset_import(const char *data_dir, const char *name, const char *archive,
                           int overwrite, const srv_dataset_limits *lim, const atomic_int *cancel,
                           srv_dataset_err *e) {
    if (srv_dataset_name_check(name, e)) return NULL;
    char dst[1200];
    struct stat st;
    if ((size_t)snprintf(dst, sizeof dst, "%s/%s", data_dir, name) >= sizeof dst)
        return derr(e, 500, "storage_failed", "data_dir is too long"), NULL;
    if (!overwrite && lstat(dst, &st) == 0)
        return derr(e, 409, "dataset_exists", "data set '%s' exists; add ?overwrite=true to "
                    "replace it", name), NULL;
    if (stat(archive, &st) != 0)
        return derr(e, 500, "storage_failed", "the upload is gone: %s", strerror(errno)), NULL;
    if (mkdir(data_dir, 0750) != 0 && errno != EEXIST)
        return derr(e, 500, "storage_failed", "cannot create data_dir %s: %s", data_dir,
                    strerror(errno)), NULL;
    sweep_stale(data_dir);
    import_ctx c = {.lim = lim, .e = e, .archive_bytes = st.st_size > 0 ? st.st_size : 1};
    snprintf(c.tmp, sizeof c.tmp, "%s/.import-XXXXXX", data_dir);
    if (!mkdtemp(c.tmp))
        return derr(e, 500, "storage_failed", "cannot create a directory in data_dir %s: %s",
                    data_dir, strerror(errno)), NULL;
    char in[1300];
    snprintf(in, sizeof in, "%s/in", c.tmp);
    json_t *m = NULL;
    srv__ds_layout lay;
    char why[480];
    if (mkdir(in, 0750) != 0) {
        storage_err(&c, "mkdir", errno);
    } else if (read_archive(&c, archive, cancel) == 0) {
        if (c.n == 0) {
            derr(e, 400, "no_images", "the archive holds no PNG or JPEG images (%lld entries; "
                 "skipped: %lld hidden, %lld not PNG/JPEG)", c.entries, c.skipped_hidden,
                 c.skipped_other);
        } else {
            char **paths = malloc(sizeof(char *) * (size_t)c.n);
            if (!paths) {
                derr(e, 500, "out_of_memory", "out of memory");
            } else {
                for (int i = 0; i < c.n; i++) paths[i] = c.recs[i].path;
                if (srv__dataset_layout(paths, c.n, &lay, why, sizeof why))
                    derr(e, 400, "bad_layout", "%s", why);
                else
                    m = arrange(&c, name, &lay);
                free(paths);
            }
        }
    }
    if (m) { /* durable before it is visible */
        int fd = open(c.tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd >= 0) {
            syncfs(fd);
            close(fd);
        }
        if (place(&c, data_dir, name, overwrite)) {
            json_decref(m);
            m = NULL;
        } else {
            dyn_file_fsync_dir(data_dir);
        }
    }
    remove_tree(c.tmp);
    for (int i = 0; i < c.n; i++) free(c.recs[i].path);
    free(c.recs);
    free(c.buf);
    return m;
}

/* ---- list, describe, delete, labeled ---- */

static int is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static int idx_present(const char *dir, const char *stem) {
    char p[1400];
    snprintf(p, sizeof p, "%s/%s", dir, stem);
    if (access(p, R_OK) == 0) return 1;
    snprintf(p, sizeof p, "%s/%s.gz", dir, stem);
    return access(p, R_OK) == 0;
}

/* Sub-folder names of dir (not hidden), sorted, as a JSON array (at most MAX_CLASSES + 1). */
static json_t *subdirs(const char *dir) {
    json_t *a = json_array();
    DIR *d = opendir(dir);
    if (!d) return a;
    struct dirent *e;
    char p[1400 + sizeof e->d_name + 1]; /* dir (at most 1400 here) / entry */
    char *names[MAX_CLASSES + 1];
    int n = 0;
    while ((e = readdir(d)) && n <= MAX_CLASSES) {
        if (e->d_name[0] == '.') continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (is_dir(p) && (names[n] = strdup(e->d_name))) n++;
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof *names, cmp_str);
    for (int i = 0; i < n; i++) {
        json_array_append_new(a, json_string(names[i]));
        free(names[i]);
    }
    return a;
}

/* The manifest of dir, or NULL. */
static json_t *manifest_load(const char *dir) {
    char p[1400];
    snprintf(p, sizeof p, "%s/" MANIFEST, dir);
    json_t *m = json_load_file(p, JSON_REJECT_DUPLICATES, NULL);
    if (m && !json_is_object(m)) {
        json_decref(m);
        m = NULL;
    }
    return m;
}

/* data_dir/<name> as the loader resolves it ("fashion-mnist" is data_dir/fashion). */
static int set_dir(const char *data_dir, const char *name, char *p, size_t n) {
    return (size_t)snprintf(p, n, "%s/%s", data_dir,
                            !strcmp(name, "fashion-mnist") ? "fashion" : name) < n ? 0 : -1;
}

static json_t *describe_dir(const char *dir, const char *name) {
    json_t *m = manifest_load(dir);
    if (m) {
        json_object_set_new(m, "name", json_string(name));
        json_object_set_new(m, "managed", json_true());
        json_object_set_new(m, "builtin", json_boolean(srv_dataset_builtin(name)));
        return m;
    }
    json_t *o = json_pack("{s:s, s:b, s:b}", "name", name, "managed", 0, "builtin",
                          srv_dataset_builtin(name));
    if (idx_present(dir, "train-images-idx3-ubyte") || idx_present(dir, "t10k-images-idx3-ubyte")) {
        json_t *sp = json_array();
        if (idx_present(dir, "train-images-idx3-ubyte")) json_array_append_new(sp, json_string("train"));
        if (idx_present(dir, "t10k-images-idx3-ubyte")) json_array_append_new(sp, json_string("test"));
        json_object_set_new(o, "format", json_string("idx"));
        json_object_set_new(o, "labeled", json_true());
        json_object_set_new(o, "splits", sp);
        return o;
    }
    char p[1400];
    snprintf(p, sizeof p, "%s/train", dir);
    int split = is_dir(p);
    json_t *cls = subdirs(split ? p : dir);
    json_t *sp = json_array();
    json_array_append_new(sp, json_string("train"));
    snprintf(p, sizeof p, "%s/test", dir);
    if (split && is_dir(p)) json_array_append_new(sp, json_string("test"));
    int unlabeled = json_array_size(cls) == 1 &&
                    !strcmp(json_string_value(json_array_get(cls, 0)), UNLABELED);
    json_object_set_new(o, "format", json_string("images"));
    json_object_set_new(o, "labeled", json_boolean(!unlabeled && json_array_size(cls) > 0));
    json_object_set_new(o, "classes", unlabeled ? json_array() : cls);
    if (unlabeled) json_decref(cls);
    json_object_set_new(o, "splits", sp);
    return o;
}

json_t *srv_dataset_describe(const char *data_dir, const char *name, srv_dataset_err *e) {
    if (!srv_repo_name_valid(name))
        return derr(e, 400, "invalid_name", "data set names are 1-64 characters of A-Z a-z 0-9 "
                    "_ . - and do not start with '.'"), NULL;
    char dir[1200];
    if (set_dir(data_dir, name, dir, sizeof dir) || !is_dir(dir))
        return derr(e, 404, "dataset_not_found", "no data set '%s' (GET /v1/datasets lists "
                    "them)", name), NULL;
    return describe_dir(dir, name);
}

json_t *srv_dataset_list(const char *data_dir) {
    json_t *list = json_array();
    DIR *d = opendir(data_dir);
    if (d) {
        struct dirent *e;
        char p[1400];
        while ((e = readdir(d))) {
            if (!srv_repo_name_valid(e->d_name)) continue; /* hidden, temporaries */
            snprintf(p, sizeof p, "%s/%s", data_dir, e->d_name);
            if (is_dir(p)) json_array_append_new(list, describe_dir(p, e->d_name));
        }
        closedir(d);
    }
    /* sort by name */
    size_t n = json_array_size(list);
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0; j--) {
            json_t *a = json_array_get(list, j - 1), *b = json_array_get(list, j);
            if (strcmp(json_string_value(json_object_get(a, "name")),
                       json_string_value(json_object_get(b, "name"))) <= 0)
                break;
            json_incref(a);
            json_array_set(list, j - 1, b);
            json_array_set_new(list, j, a);
        }
    return json_pack("{s:o}", "datasets", list);
}

int srv_dataset_delete(const char *data_dir, const char *name, srv_dataset_err *e) {
    if (srv_dataset_name_check(name, e)) return -1;
    char dir[1200], trash[1300];
    struct stat st;
    snprintf(dir, sizeof dir, "%s/%s", data_dir, name);
    if (lstat(dir, &st) != 0 || (!S_ISDIR(st.st_mode) && !S_ISLNK(st.st_mode)) ||
        (S_ISLNK(st.st_mode) && !is_dir(dir))) {
        derr(e, 404, "dataset_not_found", "no data set '%s' (GET /v1/datasets lists them)", name);
        return -1;
    }
    static atomic_uint seq;
    snprintf(trash, sizeof trash, "%s/.delete-%ld-%u", data_dir, (long)getpid(),
             atomic_fetch_add(&seq, 1));
    if (rename(dir, trash) != 0) {
        int err = errno;
        if (err == ENOENT) {
            derr(e, 404, "dataset_not_found", "no data set '%s'", name);
            return -1;
        }
        derr(e, 500, "storage_failed", "cannot remove data set '%s': %s", name, strerror(err));
        return -1;
    }
    dyn_file_fsync_dir(data_dir);
    remove_tree(trash);
    return 0;
}

int srv_dataset_labeled(const char *data_dir, const char *name) {
    if (!srv_repo_name_valid(name)) return DYN_EINVAL;
    dyn_dataset_spec d = {0};
    if (set_dir(data_dir, name, d.dir, sizeof d.dir) || !is_dir(d.dir)) return DYN_EIO;
    return dyn_dataset_labeled(&d);
}
