/* store.c — results storage (store.h): the HDF5 file of DESIGN.md §6 made
 * crash-safe by a checksummed journal and whole-file atomic rewrites.
 *
 * Writer. All points live in memory (an insertion-ordered array with a hash
 * index on the key). ab_store_append first appends the point to
 * OUT.journal (one write() of the whole record, then fdatasync), then, at
 * most once per second (less often when a rewrite takes over 0.1 s, so that
 * rewrites stay under ~10% of the time), rebuilds the complete HDF5 file in
 * memory (HDF5 core driver, no backing store), writes that image to OUT.tmp
 * with our own write()/fsync() (so I/O errors carry a real errno), renames it
 * over OUT and fsyncs the directory. OUT is never modified in place, so it
 * always opens. After each successful rewrite the journal is cut back to its
 * header (OUT holds everything), so it only ever holds the points of the
 * last interval.
 *
 * Journal OUT.journal (native byte order; it never leaves the machine):
 *   header  "ABJRNL01" | u32 sizeof(ab_point) | u32 AB_SCHEMA_VERSION
 *   record  u32 AB_JREC_MAGIC | u32 length | ab_point bytes | u32 CRC32
 * A reader stops silently at the first short or corrupt record (the torn
 * tail of a SIGKILL), so a record counts whole or not at all.
 *
 * Readers (ab_results_read, resume) load the file image into memory and open
 * it with the core driver too: no HDF5 file locking (which fails on some
 * cluster file systems) and a consistent snapshot even while a writer renames.
 *
 * Fork safety: only the parent (the process that opened the store) appends
 * or closes; the store remembers that pid and refuses calls from others.
 * Between calls no HDF5 handle is open, so forking at any point between
 * store calls is safe; a child that inherited a store calls only
 * ab_store_abandon (closes its copy of the journal fd, frees memory).
 */
#include "harness/store/store.h"

#include <hdf5.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define AB_JOURNAL_MAGIC "ABJRNL01"
#define AB_JREC_MAGIC 0x52504241u /* "ABPR" little-endian */
#define AB_REWRITE_INTERVAL_S 1.0
#define AB_POINTS_CHUNK 64
/* Labels for in-memory HDF5 files: paths that can never exist on disk (the
 * core driver refuses to open an image under the name of an existing file). */
#define AB_IMAGE_LABEL_W "/dev/null/attnbench-write-image"
#define AB_IMAGE_LABEL_R "/dev/null/attnbench-read-image"

/* ---- small helpers ------------------------------------------------------ */

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
        for (char *c = err; *c; c++) /* one line, always */
            if (*c == '\n' || *c == '\r')
                *c = ' ';
    }
    return -1;
}

static char *cat_path(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char *s = malloc(la + lb + 1);
    if (s) {
        memcpy(s, a, la);
        memcpy(s + la, b, lb + 1);
    }
    return s;
}

static int write_all(int fd, const void *buf, size_t len, off_t off)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t w = pwrite(fd, p, len, off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (w == 0) {
            errno = ENOSPC;
            return -1;
        }
        p += w;
        len -= (size_t)w;
        off += w;
    }
    return 0;
}

/* Reads up to len bytes; returns the count (short only at end of file), or
 * -1 with errno. */
static ssize_t read_full(int fd, void *buf, size_t len)
{
    char *p = buf;
    size_t got = 0;
    while (got < len) {
        ssize_t r = read(fd, p + got, len - got);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (r == 0)
            break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

/* fsync the directory holding path, so a rename/create/unlink is durable.
 * File systems that cannot fsync a directory (EINVAL) are accepted. */
static int fsync_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir;
    if (!slash)
        dir = cat_path(".", "");
    else if (slash == path)
        dir = cat_path("/", "");
    else {
        dir = malloc((size_t)(slash - path) + 1);
        if (dir) {
            memcpy(dir, path, (size_t)(slash - path));
            dir[slash - path] = '\0';
        }
    }
    if (!dir) {
        errno = ENOMEM;
        return -1;
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    free(dir);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    if (rc < 0 && e != EINVAL && e != EROFS) {
        errno = e;
        return -1;
    }
    return 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- CRC-32 (IEEE 802.3, reflected, as zlib/PNG) ------------------------ */

typedef struct crc_table { uint32_t t[256]; } crc_table;

static void crc32_init(crc_table *ct)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1u) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        ct->t[i] = c;
    }
}

static uint32_t crc32_calc(const crc_table *ct, const void *buf, size_t len)
{
    const unsigned char *p = buf;
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < len; i++)
        c = ct->t[(c ^ p[i]) & 0xFFu] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

/* ---- the fields of ab_point that form a /points row ---------------------- */

enum { F_STR, F_I32, F_I64, F_F64 };
typedef struct field_desc {
    const char *name;
    size_t off, size;
    int kind;
} field_desc;

#define FLD(f, k) { #f, offsetof(ab_point, f), sizeof(((ab_point *)0)->f), k }
static const field_desc point_fields[] = {
    FLD(key, F_STR), FLD(method, F_STR), FLD(params, F_STR),
    FLD(device, F_STR), FLD(dtype, F_STR), FLD(task, F_STR),
    FLD(kernel, F_STR), FLD(layout, F_STR),
    FLD(seq_len, F_I32), FLD(heads, F_I32), FLD(head_dim, F_I32),
    FLD(causal, F_I32), FLD(mask, F_STR), FLD(mask_density, F_F64),
    FLD(threads, F_I32),
    FLD(seed, F_I64),
    FLD(depth, F_F64), FLD(target_density, F_F64), FLD(knob_value, F_F64),
    FLD(achieved_density, F_F64),
    FLD(select_ms, F_F64), FLD(run_ms, F_F64), FLD(total_ms, F_F64),
    FLD(min_ms, F_F64), FLD(p10_ms, F_F64), FLD(p90_ms, F_F64),
    FLD(cv, F_F64),
    FLD(n_samples, F_I32),
    FLD(dense_gflops, F_F64), FLD(recall_mass, F_F64),
    FLD(recall_topk, F_F64), FLD(rel_l2_err, F_F64), FLD(max_abs_err, F_F64),
    FLD(accuracy, F_F64), FLD(acc_ci_lo, F_F64), FLD(acc_ci_hi, F_F64),
    FLD(acc_trials, F_I32),
    FLD(rows_scored, F_I32),
    FLD(status, F_STR), FLD(message, F_STR),
    FLD(rounds, F_I32), FLD(calls, F_I32),
    FLD(total_lo_ms, F_F64), FLD(total_hi_ms, F_F64), FLD(dense_pair_ms, F_F64),
    FLD(rel_dense, F_F64), FLD(rel_lo, F_F64), FLD(rel_hi, F_F64),
    FLD(foreign_pct, F_F64), FLD(steal_pct, F_F64), FLD(load1, F_F64), FLD(fma_gflops, F_F64), FLD(shared_pct, F_F64), FLD(point_s, F_F64),
    FLD(timing, F_STR),
};
#undef FLD
#define N_FIELDS (sizeof point_fields / sizeof point_fields[0])

/* NUL-terminate every string, clamp n_samples: whatever came from a file or a
 * caller is safe to print and index afterwards. */
static void point_sanitize(ab_point *p)
{
    for (size_t i = 0; i < N_FIELDS; i++)
        if (point_fields[i].kind == F_STR)
            ((char *)p)[point_fields[i].off + point_fields[i].size - 1] = '\0';
    if (p->n_samples < 0)
        p->n_samples = 0;
    if (p->n_samples > AB_MAX_SAMPLES)
        p->n_samples = AB_MAX_SAMPLES;
}

/* A key names /samples/KEY, so it must be a plain HDF5 link name. */
static int key_ok(const char *key)
{
    size_t n = strnlen(key, sizeof(((ab_point *)0)->key));
    if (n == 0 || n >= sizeof(((ab_point *)0)->key))
        return 0;
    if (strcmp(key, ".") == 0 || strcmp(key, "..") == 0)
        return 0;
    return strchr(key, '/') == NULL;
}

/* Compound type of one row. mem = 1: the layout of ab_point (NATIVE types,
 * size sizeof(ab_point), sample arrays not members); mem = 0: the packed
 * little-endian file type. present (mem = 1 only, may be NULL): include
 * only the fields with present[i] != 0 (those an older file has). */
static hid_t point_type_sub(int mem, const unsigned char *present);
static hid_t point_type(int mem)
{
    return point_type_sub(mem, NULL);
}

static hid_t point_type_sub(int mem, const unsigned char *present)
{
    size_t total = 0;
    for (size_t i = 0; i < N_FIELDS; i++)
        total += point_fields[i].size;
    hid_t t = H5Tcreate(H5T_COMPOUND, mem ? sizeof(ab_point) : total);
    if (t < 0)
        return -1;
    size_t off = 0;
    for (size_t i = 0; i < N_FIELDS; i++) {
        const field_desc *f = &point_fields[i];
        hid_t m = -1;
        int ok = 1;
        if (present && !present[i])
            continue;
        switch (f->kind) {
        case F_STR:
            m = H5Tcopy(H5T_C_S1);
            ok = m >= 0 && H5Tset_size(m, f->size) >= 0 &&
                 H5Tset_strpad(m, H5T_STR_NULLTERM) >= 0;
            break;
        case F_I32:
            m = H5Tcopy(mem ? H5T_NATIVE_INT32 : H5T_STD_I32LE);
            break;
        case F_I64:
            m = H5Tcopy(mem ? H5T_NATIVE_INT64 : H5T_STD_I64LE);
            break;
        default:
            m = H5Tcopy(mem ? H5T_NATIVE_DOUBLE : H5T_IEEE_F64LE);
            break;
        }
        ok = ok && m >= 0 &&
             H5Tinsert(t, f->name, mem ? f->off : off, m) >= 0;
        if (m >= 0)
            H5Tclose(m);
        if (!ok) {
            H5Tclose(t);
            return -1;
        }
        off += f->size;
    }
    return t;
}

/* ---- HDF5 error plumbing ------------------------------------------------ */

typedef struct h5quiet { H5E_auto2_t fn; void *data; } h5quiet;

static void h5_quiet(h5quiet *q)
{
    q->fn = NULL;
    q->data = NULL;
    H5Eget_auto2(H5E_DEFAULT, &q->fn, &q->data);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

static void h5_restore(const h5quiet *q)
{
    H5Eset_auto2(H5E_DEFAULT, q->fn, q->data);
}

typedef struct errbuf { char *buf; size_t len; } errbuf;

static herr_t h5_walk_cb(unsigned n, const H5E_error2_t *e, void *data)
{
    errbuf *eb = data;
    if (n == 0 && e && e->desc)
        snprintf(eb->buf, eb->len, "%s", e->desc);
    return 0;
}

/* The innermost description on HDF5's error stack (call right after the
 * failing call: the next API call clears the stack). */
static void h5_errdesc(char *buf, size_t len)
{
    errbuf eb = { buf, len };
    buf[0] = '\0';
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, h5_walk_cb, &eb);
    if (!buf[0])
        snprintf(buf, len, "HDF5 error");
}

/* ---- point set: insertion-ordered array + open-addressing key index ----- */

typedef struct pset {
    ab_point *v;
    size_t n, cap;
    size_t *slot; /* index + 1; 0 = empty */
    size_t nslot; /* power of two */
} pset;

static uint64_t key_hash(const char *k)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < sizeof(((ab_point *)0)->key) && k[i]; i++) {
        h ^= (unsigned char)k[i];
        h *= 1099511628211ull;
    }
    return h;
}

static size_t pset_find(const pset *s, const char *key)
{
    if (!s->nslot)
        return SIZE_MAX;
    size_t mask = s->nslot - 1;
    for (size_t h = (size_t)key_hash(key) & mask; s->slot[h]; h = (h + 1) & mask) {
        const ab_point *p = &s->v[s->slot[h] - 1];
        if (strncmp(p->key, key, sizeof p->key) == 0)
            return s->slot[h] - 1;
    }
    return SIZE_MAX;
}

static int pset_rehash(pset *s, size_t nslot)
{
    size_t *slot = calloc(nslot, sizeof *slot);
    if (!slot)
        return -1;
    for (size_t i = 0; i < s->n; i++) {
        size_t h = (size_t)key_hash(s->v[i].key) & (nslot - 1);
        while (slot[h])
            h = (h + 1) & (nslot - 1);
        slot[h] = i + 1;
    }
    free(s->slot);
    s->slot = slot;
    s->nslot = nslot;
    return 0;
}

/* Make room for `extra` more points so that a following pset_put of new
 * keys cannot fail. */
static int pset_reserve(pset *s, size_t extra)
{
    if (extra > SIZE_MAX / 4 - s->n)
        return -1;
    size_t need = s->n + extra;
    if (need > s->cap) {
        size_t cap = s->cap ? s->cap : 64;
        while (cap < need)
            cap *= 2;
        if (cap > SIZE_MAX / sizeof(ab_point))
            return -1;
        ab_point *v = realloc(s->v, cap * sizeof *v);
        if (!v)
            return -1;
        s->v = v;
        s->cap = cap;
    }
    if (need * 2 > s->nslot) {
        size_t nslot = s->nslot ? s->nslot : 128;
        while (need * 2 > nslot)
            nslot *= 2;
        if (pset_rehash(s, nslot) < 0)
            return -1;
    }
    return 0;
}

/* Insert or replace (the later row wins, keeping the first one's position). */
static int pset_put(pset *s, const ab_point *p)
{
    size_t i = pset_find(s, p->key);
    if (i != SIZE_MAX) {
        s->v[i] = *p;
        return 0;
    }
    if (pset_reserve(s, 1) < 0)
        return -1;
    s->v[s->n] = *p;
    size_t mask = s->nslot - 1;
    size_t h = (size_t)key_hash(p->key) & mask;
    while (s->slot[h])
        h = (h + 1) & mask;
    s->slot[h] = ++s->n;
    return 0;
}

static void pset_free(pset *s)
{
    free(s->v);
    free(s->slot);
    memset(s, 0, sizeof *s);
}

/* ---- building the HDF5 image -------------------------------------------- */

static int attr_write_str(hid_t loc, const char *name, const char *value)
{
    int rc = -1;
    hid_t t = -1, sp = -1, a = -1;
    if ((t = H5Tcopy(H5T_C_S1)) < 0 || H5Tset_size(t, H5T_VARIABLE) < 0 ||
        H5Tset_cset(t, H5T_CSET_UTF8) < 0)
        goto cleanup;
    if ((sp = H5Screate(H5S_SCALAR)) < 0)
        goto cleanup;
    if ((a = H5Acreate2(loc, name, t, sp, H5P_DEFAULT, H5P_DEFAULT)) < 0)
        goto cleanup;
    if (H5Awrite(a, t, &value) < 0)
        goto cleanup;
    rc = 0;
cleanup:
    if (a >= 0) H5Aclose(a);
    if (sp >= 0) H5Sclose(sp);
    if (t >= 0) H5Tclose(t);
    return rc;
}

static int attr_write_int(hid_t loc, const char *name, int value)
{
    int rc = -1;
    hid_t sp = -1, a = -1;
    if ((sp = H5Screate(H5S_SCALAR)) < 0)
        goto cleanup;
    if ((a = H5Acreate2(loc, name, H5T_STD_I32LE, sp, H5P_DEFAULT, H5P_DEFAULT)) < 0)
        goto cleanup;
    if (H5Awrite(a, H5T_NATIVE_INT, &value) < 0)
        goto cleanup;
    rc = 0;
cleanup:
    if (a >= 0) H5Aclose(a);
    if (sp >= 0) H5Sclose(sp);
    return rc;
}

static int write_root_attrs(hid_t fid, const ab_env *env)
{
    if (attr_write_int(fid, "schema_version", AB_SCHEMA_VERSION) < 0)
        return -1;
    for (int i = 0; env && i < env->n && i < AB_ENV_MAX; i++) {
        if (!env->name[i][0] || strcmp(env->name[i], "schema_version") == 0)
            continue;
        /* best effort: a name HDF5 refuses must not stop the results */
        attr_write_str(fid, env->name[i], env->value[i] ? env->value[i] : "");
    }
    return 0;
}

static int write_schema(hid_t fid)
{
    int rc = -1;
    hid_t g = H5Gcreate2(fid, "schema", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0)
        return -1;
    if (attr_write_str(g, "units", "ms") < 0 ||
        attr_write_str(g, "time_fields",
                       "select_ms run_ms total_ms min_ms p10_ms p90_ms "
                       "(medians except min/p10/p90 of total_ms)") < 0 ||
        attr_write_str(g, "other_units",
                       "cv: dimensionless; dense_gflops: GFLOP/s of the dense-"
                       "equivalent work at total_ms; densities: fraction") < 0 ||
        attr_write_str(g, "samples",
                       "/samples/KEY: [n_samples][5] double, columns round (child process), "
                       "calls (batched per sample), select_ms, run_ms (per call), dense_ms "
                       "(the paired dense sample, per call; NaN unpaired); files before the "
                       "timing protocol have [n][2] select_ms, run_ms") < 0 ||
        attr_write_str(g, "points",
                       "/points: one row per point, in the order measured; "
                       "key identifies the point") < 0)
        goto cleanup;
    rc = 0;
cleanup:
    H5Gclose(g);
    return rc;
}

static int write_points(hid_t fid, const pset *s)
{
    int rc = -1;
    hid_t mt = -1, ft = -1, sp = -1, dcpl = -1, ds = -1;
    hsize_t dims[1] = { (hsize_t)s->n }, maxd[1] = { H5S_UNLIMITED };
    hsize_t chunk[1] = { AB_POINTS_CHUNK };
    unsigned filt = 0;

    if ((mt = point_type(1)) < 0 || (ft = point_type(0)) < 0)
        goto cleanup;
    if ((sp = H5Screate_simple(1, dims, maxd)) < 0)
        goto cleanup;
    if ((dcpl = H5Pcreate(H5P_DATASET_CREATE)) < 0 || H5Pset_chunk(dcpl, 1, chunk) < 0)
        goto cleanup;
    if (H5Zfilter_avail(H5Z_FILTER_DEFLATE) > 0 &&
        H5Zget_filter_info(H5Z_FILTER_DEFLATE, &filt) >= 0 &&
        (filt & H5Z_FILTER_CONFIG_ENCODE_ENABLED) &&
        H5Pset_deflate(dcpl, 1) < 0)
        goto cleanup;
    if ((ds = H5Dcreate2(fid, "points", ft, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT)) < 0)
        goto cleanup;
    if (s->n && H5Dwrite(ds, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, s->v) < 0)
        goto cleanup;
    rc = 0;
cleanup:
    if (ds >= 0) H5Dclose(ds);
    if (dcpl >= 0) H5Pclose(dcpl);
    if (sp >= 0) H5Sclose(sp);
    if (ft >= 0) H5Tclose(ft);
    if (mt >= 0) H5Tclose(mt);
    return rc;
}

#define AB_SAMPLE_COLS 5 /* round, calls, select_ms, run_ms, dense_ms */
static int write_one_samples(hid_t g, hid_t dcpl, const ab_point *p)
{
    int rc = -1;
    hid_t sp = -1, ds = -1;
    double buf[AB_MAX_SAMPLES][AB_SAMPLE_COLS];
    int n = p->n_samples;
    hsize_t dims[2] = { (hsize_t)n, AB_SAMPLE_COLS };
    for (int i = 0; i < n; i++) {
        buf[i][0] = p->sample_round[i];
        buf[i][1] = p->sample_calls[i];
        buf[i][2] = p->sample_select_ms[i];
        buf[i][3] = p->sample_run_ms[i];
        buf[i][4] = p->sample_dense_ms[i];
    }
    if ((sp = H5Screate_simple(2, dims, NULL)) < 0)
        goto cleanup;
    if ((ds = H5Dcreate2(g, p->key, H5T_IEEE_F64LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT)) < 0)
        goto cleanup;
    if (H5Dwrite(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0)
        goto cleanup;
    rc = 0;
cleanup:
    if (ds >= 0) H5Dclose(ds);
    if (sp >= 0) H5Sclose(sp);
    return rc;
}

static int write_samples(hid_t fid, const pset *s)
{
    int rc = -1;
    hid_t g = -1, dcpl = -1;
    if ((g = H5Gcreate2(fid, "samples", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)) < 0)
        goto cleanup;
    if (attr_write_str(g, "columns", "round,calls,select_ms,run_ms,dense_ms") < 0 ||
        attr_write_str(g, "units", "ms") < 0)
        goto cleanup;
    /* at most 10 KiB per point: compact (inside the object header) */
    if ((dcpl = H5Pcreate(H5P_DATASET_CREATE)) < 0 || H5Pset_layout(dcpl, H5D_COMPACT) < 0)
        goto cleanup;
    for (size_t i = 0; i < s->n; i++) {
        const ab_point *p = &s->v[i];
        if (p->n_samples > 0 && key_ok(p->key) && write_one_samples(g, dcpl, p) < 0)
            goto cleanup;
    }
    rc = 0;
cleanup:
    if (dcpl >= 0) H5Pclose(dcpl);
    if (g >= 0) H5Gclose(g);
    return rc;
}

/* Build the whole results file in memory; *img is malloc'd (free()). */
static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* `run --save-tensors` leaves one small HDF5 file per problem and point in
 * PATH.tensors/ (harness/engine/tensors.c); copy each into /tensors/NAME, in name
 * order. No directory: nothing to do. */
static int write_tensors(hid_t fid, const char *path)
{
    char dir[1200];
    snprintf(dir, sizeof dir, "%s.tensors", path);
    DIR *dp = opendir(dir);
    if (!dp)
        return 0;
    char **names = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    struct dirent *de;
    while ((de = readdir(dp))) {
        size_t l = strlen(de->d_name);
        if (de->d_name[0] == '.' || l < 4 || strcmp(de->d_name + l - 3, ".h5"))
            continue;
        if (n == cap) {
            char **nn = realloc(names, (cap = cap ? 2 * cap : 64) * sizeof *names);
            if (!nn) { rc = -1; break; }
            names = nn;
        }
        if (!(names[n] = strdup(de->d_name))) { rc = -1; break; }
        n++;
    }
    closedir(dp);
    if (n) qsort(names, n, sizeof *names, cmp_str);
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    if (lcpl < 0 || H5Pset_create_intermediate_group(lcpl, 1) < 0)
        rc = -1;
    for (size_t i = 0; i < n && rc == 0; i++) {
        char src[1400], dst[300];
        snprintf(src, sizeof src, "%s/%s", dir, names[i]);
        snprintf(dst, sizeof dst, "/tensors/%.*s", (int)(strlen(names[i]) - 3), names[i]);
        hid_t f = H5Fopen(src, H5F_ACC_RDONLY, H5P_DEFAULT);
        if (f < 0)
            continue; /* a torn file from a killed child: its point is not stored either */
        if (H5Ocopy(f, ".", fid, dst, H5P_DEFAULT, lcpl) < 0)
            rc = -1;
        H5Fclose(f);
    }
    if (lcpl >= 0)
        H5Pclose(lcpl);
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return rc;
}

/* /shards/shard_I: the environment of each input of `attnbench merge`. */
static int write_shards(hid_t fid, const ab_env *shards, int nshards)
{
    if (nshards <= 0)
        return 0;
    hid_t g = H5Gcreate2(fid, "shards", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0)
        return -1;
    int rc = attr_write_str(g, "about", "one group per merged input file, in merge order: "
                                        "its root attributes (the run environment of that shard)");
    for (int i = 0; i < nshards && rc == 0; i++) {
        char name[32];
        snprintf(name, sizeof name, "shard_%d", i);
        hid_t sg = H5Gcreate2(g, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        if (sg < 0) { rc = -1; break; }
        for (int k = 0; k < shards[i].n && k < AB_ENV_MAX; k++)
            if (shards[i].name[k][0]) /* best effort, as for the root */
                attr_write_str(sg, shards[i].name[k], shards[i].value[k] ? shards[i].value[k] : "");
        H5Gclose(sg);
    }
    H5Gclose(g);
    return rc;
}

static int build_image(const ab_env *env, const pset *s, void **img, size_t *len,
                       const char *path, const ab_env *shards, int nshards, char *err, size_t errlen)
{
    int rc = -1;
    hid_t fapl = -1, fcpl = -1, fid = -1;
    void *buf = NULL;
    const char *what = "creating the in-memory file";
    char h5msg[160] = "";
    h5quiet q;
    h5_quiet(&q);

    *img = NULL;
    *len = 0;
    if ((fapl = H5Pcreate(H5P_FILE_ACCESS)) < 0 ||
        H5Pset_fapl_core(fapl, (size_t)1 << 20, 0) < 0 ||
        H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG) < 0)
        goto h5err;
    /* root attributes keep their creation order (the env order) */
    if ((fcpl = H5Pcreate(H5P_FILE_CREATE)) < 0 ||
        H5Pset_attr_creation_order(fcpl, H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED) < 0)
        goto h5err;
    if ((fid = H5Fcreate(AB_IMAGE_LABEL_W, H5F_ACC_TRUNC, fcpl, fapl)) < 0)
        goto h5err;
    what = "writing the root attributes";
    if (write_root_attrs(fid, env) < 0)
        goto h5err;
    what = "writing /shards";
    if (write_shards(fid, shards, nshards) < 0)
        goto h5err;
    what = "writing /schema";
    if (write_schema(fid) < 0)
        goto h5err;
    what = "writing /points";
    if (write_points(fid, s) < 0)
        goto h5err;
    what = "writing /samples";
    if (write_samples(fid, s) < 0)
        goto h5err;
    what = "copying the saved tensors into /tensors";
    if (write_tensors(fid, path) < 0)
        goto h5err;
    what = "taking the file image";
    if (H5Fflush(fid, H5F_SCOPE_GLOBAL) < 0)
        goto h5err;
    ssize_t sz = H5Fget_file_image(fid, NULL, 0);
    if (sz <= 0)
        goto h5err;
    if (!(buf = malloc((size_t)sz))) {
        fail(err, errlen, "cannot write %s: out of memory (%zd-byte image)", path, sz);
        goto cleanup;
    }
    if (H5Fget_file_image(fid, buf, (size_t)sz) != sz)
        goto h5err;
    *img = buf;
    *len = (size_t)sz;
    buf = NULL;
    rc = 0;
    goto cleanup;
h5err:
    h5_errdesc(h5msg, sizeof h5msg);
    fail(err, errlen, "cannot write %s: HDF5 failed while %s (%s)", path, what, h5msg);
cleanup:
    free(buf);
    if (fid >= 0) H5Fclose(fid);
    if (fcpl >= 0) H5Pclose(fcpl);
    if (fapl >= 0) H5Pclose(fapl);
    h5_restore(&q);
    return rc;
}

/* Write buf to tmp, fsync, rename over path, fsync the directory. On any
 * failure tmp is removed and path is untouched (except a failed directory
 * sync, after which path already holds the new content). */
static int write_atomic(const char *path, const char *tmp, const void *buf,
                        size_t len, char *err, size_t errlen)
{
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return fail(err, errlen, "cannot create %s: %s", tmp, strerror(errno));
    if (write_all(fd, buf, len, 0) < 0 || fsync(fd) < 0) {
        int e = errno;
        close(fd);
        unlink(tmp);
        return fail(err, errlen, "cannot write %s: %s", tmp, strerror(e));
    }
    if (close(fd) < 0) {
        int e = errno;
        unlink(tmp);
        return fail(err, errlen, "cannot write %s: %s", tmp, strerror(e));
    }
    if (rename(tmp, path) < 0) {
        int e = errno;
        unlink(tmp);
        return fail(err, errlen, "cannot rename %s to %s: %s", tmp, path, strerror(e));
    }
    if (fsync_dir(path) < 0)
        return fail(err, errlen, "cannot sync the directory of %s: %s", path, strerror(errno));
    return 0;
}

/* ---- reading ------------------------------------------------------------ */

typedef struct env_iter { ab_env *env; } env_iter;

static herr_t env_attr_cb(hid_t loc, const char *name, const H5A_info_t *info, void *data)
{
    env_iter *it = data;
    hid_t a = -1, t = -1, sp = -1, mt = -1;
    char *fixed = NULL;
    (void)info;
    if (strcmp(name, "schema_version") == 0)
        return 0;
    if ((a = H5Aopen(loc, name, H5P_DEFAULT)) < 0 || (t = H5Aget_type(a)) < 0 ||
        (sp = H5Aget_space(a)) < 0)
        goto cleanup;
    if (H5Tget_class(t) != H5T_STRING || H5Sget_simple_extent_npoints(sp) != 1)
        goto cleanup; /* not an env string: ignore */
    /* HDF5 converts no strings between character sets: read in the file's */
    H5T_cset_t cset = H5Tget_cset(t);
    if ((mt = H5Tcopy(H5T_C_S1)) < 0 || cset < 0 || H5Tset_cset(mt, cset) < 0)
        goto cleanup;
    if (H5Tis_variable_str(t) > 0) {
        char *s = NULL;
        if (H5Tset_size(mt, H5T_VARIABLE) < 0 || H5Aread(a, mt, &s) < 0)
            goto cleanup;
        ab_env_set(it->env, name, s ? s : "");
        if (s)
            H5free_memory(s);
    } else {
        size_t n = H5Tget_size(t);
        if (n == 0 || n > ((size_t)1 << 30) || !(fixed = calloc(n + 1, 1)))
            goto cleanup;
        if (H5Tset_size(mt, n + 1) < 0 || H5Aread(a, mt, fixed) < 0)
            goto cleanup;
        fixed[n] = '\0';
        ab_env_set(it->env, name, fixed);
    }
cleanup:
    free(fixed);
    if (mt >= 0) H5Tclose(mt);
    if (sp >= 0) H5Sclose(sp);
    if (t >= 0) H5Tclose(t);
    if (a >= 0) H5Aclose(a);
    return 0; /* one unreadable attribute is not worth failing the file */
}

/* Fill p's sample arrays from /samples/KEY when that dataset is well formed
 * ([m][5], or [m][2] select/run from files before the timing protocol;
 * m <= AB_MAX_SAMPLES); otherwise they stay zero. */
static void read_one_samples(hid_t g, ab_point *p)
{
    hid_t ds = -1, sp = -1;
    double buf[AB_MAX_SAMPLES][AB_SAMPLE_COLS];
    hsize_t dims[2];
    if (H5Lexists(g, p->key, H5P_DEFAULT) <= 0)
        return;
    if ((ds = H5Dopen2(g, p->key, H5P_DEFAULT)) < 0 || (sp = H5Dget_space(ds)) < 0)
        goto cleanup;
    if (H5Sget_simple_extent_ndims(sp) != 2 || H5Sget_simple_extent_dims(sp, dims, NULL) < 0 ||
        (dims[1] != 2 && dims[1] != AB_SAMPLE_COLS) || dims[0] > AB_MAX_SAMPLES)
        goto cleanup;
    if (dims[0] > 0 && H5Dread(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0)
        goto cleanup;
    for (int i = 0; i < p->n_samples && (hsize_t)i < dims[0]; i++) {
        if (dims[1] == 2) { /* old layout, rows packed two doubles apart */
            const double *row = &buf[0][0] + 2 * (size_t)i;
            p->sample_round[i] = 0;
            p->sample_calls[i] = 1;
            p->sample_select_ms[i] = row[0];
            p->sample_run_ms[i] = row[1];
            p->sample_dense_ms[i] = NAN;
        } else {
            const double r = buf[i][0], c = buf[i][1];
            p->sample_round[i] = r >= 0 && r < 1e6 ? (int32_t)r : 0;
            p->sample_calls[i] = c >= 1 && c < 2e9 ? (int32_t)c : 1;
            p->sample_select_ms[i] = buf[i][2];
            p->sample_run_ms[i] = buf[i][3];
            p->sample_dense_ms[i] = buf[i][4];
        }
    }
cleanup:
    if (sp >= 0) H5Sclose(sp);
    if (ds >= 0) H5Dclose(ds);
}

static size_t field_index(const char *name)
{
    size_t i = 0;
    while (i < N_FIELDS && strcmp(point_fields[i].name, name))
        i++;
    return i;
}

/* Fields an older file lacks: a number is NaN (not recorded), an integer
 * or a string empty, except the base mask of files written before base
 * masks, which was plain causal or full by the causal column. */
static void point_defaults(ab_point *p, const unsigned char *present)
{
    for (size_t i = 0; i < N_FIELDS; i++) {
        const field_desc *f = &point_fields[i];
        if (present[i] || f->kind != F_F64)
            continue;
        const double nan = NAN;
        memcpy((char *)p + f->off, &nan, sizeof nan);
    }
    if (!present[field_index("mask")])
        snprintf(p->mask, sizeof p->mask, "%s", p->causal ? "causal" : "full");
    if (!present[field_index("mask_density")]) {
        const double n = p->seq_len > 0 ? (double)p->seq_len : 1.0;
        p->mask_density = p->causal ? (n + 1.0) / (2.0 * n) : 1.0;
    }
}

/* Open file image `img` and read its points and env into set/env. */
static int h5_read_image(const char *path, const void *img, size_t len, pset *set,
                         ab_env *env, char *err, size_t errlen)
{
    int rc = -1;
    hid_t fapl = -1, fid = -1, a = -1, at = -1, asp = -1, ds = -1, dt = -1, dsp = -1;
    hid_t mt = -1, sg = -1;
    ab_point *rows = NULL;
    unsigned char present[N_FIELDS];
    char h5msg[160] = "";
    int ver = 0;
    hsize_t n = 0;

    if ((fapl = H5Pcreate(H5P_FILE_ACCESS)) < 0 ||
        H5Pset_fapl_core(fapl, (size_t)1 << 20, 0) < 0 ||
        H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG) < 0 ||
        H5Pset_file_image(fapl, (void *)img, len) < 0) {
        h5_errdesc(h5msg, sizeof h5msg);
        fail(err, errlen, "cannot read %s: %s", path, h5msg);
        goto cleanup;
    }
    if ((fid = H5Fopen(AB_IMAGE_LABEL_R, H5F_ACC_RDONLY, fapl)) < 0) {
        h5_errdesc(h5msg, sizeof h5msg);
        fail(err, errlen, "%s is a damaged HDF5 file (%s)", path, h5msg);
        goto cleanup;
    }
    if (H5Aexists(fid, "schema_version") <= 0) {
        fail(err, errlen, "%s is not an attnbench results file", path);
        goto cleanup;
    }
    if ((a = H5Aopen(fid, "schema_version", H5P_DEFAULT)) < 0 || (at = H5Aget_type(a)) < 0 ||
        (asp = H5Aget_space(a)) < 0 || H5Tget_class(at) != H5T_INTEGER ||
        H5Sget_simple_extent_npoints(asp) != 1 || H5Aread(a, H5T_NATIVE_INT, &ver) < 0) {
        fail(err, errlen, "%s is not an attnbench results file (bad schema_version)", path);
        goto cleanup;
    }
    if (ver != AB_SCHEMA_VERSION) {
        fail(err, errlen, "%s has schema version %d, this attnbench reads %d",
             path, ver, AB_SCHEMA_VERSION);
        goto cleanup;
    }
    if (H5Lexists(fid, "points", H5P_DEFAULT) <= 0 ||
        (ds = H5Dopen2(fid, "points", H5P_DEFAULT)) < 0 || (dt = H5Dget_type(ds)) < 0 ||
        H5Tget_class(dt) != H5T_COMPOUND || (dsp = H5Dget_space(ds)) < 0 ||
        H5Sget_simple_extent_ndims(dsp) != 1 || H5Sget_simple_extent_dims(dsp, &n, NULL) < 0) {
        fail(err, errlen, "%s is not an attnbench results file (no readable /points)", path);
        goto cleanup;
    }
    if (n > (hsize_t)(SIZE_MAX / sizeof(ab_point) / 2)) {
        fail(err, errlen, "%s: /points is implausibly large (%llu rows)", path,
             (unsigned long long)n);
        goto cleanup;
    }
    if (n > 0) {
        if (!(rows = calloc((size_t)n, sizeof *rows))) {
            fail(err, errlen, "cannot read %s: out of memory for %llu points", path,
                 (unsigned long long)n);
            goto cleanup;
        }
        /* Read the fields the file has: a file written before a field
         * existed (mask, mask_density: base masks) still reads, the
         * missing fields get defaults below. */
        for (size_t i = 0; i < N_FIELDS; i++)
            present[i] = H5Tget_member_index(dt, point_fields[i].name) >= 0;
        if (!present[field_index("key")]) {
            fail(err, errlen, "%s is not an attnbench results file (/points has no key field)", path);
            goto cleanup;
        }
        if ((mt = point_type_sub(1, present)) < 0 ||
            H5Dread(ds, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, rows) < 0) {
            h5_errdesc(h5msg, sizeof h5msg);
            fail(err, errlen, "cannot read /points of %s (%s)", path, h5msg);
            goto cleanup;
        }
        for (size_t r = 0; r < (size_t)n; r++)
            point_defaults(&rows[r], present);
    }
    if (H5Lexists(fid, "samples", H5P_DEFAULT) > 0)
        sg = H5Gopen2(fid, "samples", H5P_DEFAULT);
    if (pset_reserve(set, (size_t)n) < 0) {
        fail(err, errlen, "cannot read %s: out of memory", path);
        goto cleanup;
    }
    for (size_t i = 0; i < (size_t)n; i++) {
        ab_point *p = &rows[i];
        point_sanitize(p);
        memset(p->sample_select_ms, 0, sizeof p->sample_select_ms);
        memset(p->sample_run_ms, 0, sizeof p->sample_run_ms);
        memset(p->sample_dense_ms, 0, sizeof p->sample_dense_ms);
        memset(p->sample_round, 0, sizeof p->sample_round);
        memset(p->sample_calls, 0, sizeof p->sample_calls);
        if (sg >= 0 && p->n_samples > 0 && key_ok(p->key))
            read_one_samples(sg, p);
        if (pset_put(set, p) < 0) {
            fail(err, errlen, "cannot read %s: out of memory", path);
            goto cleanup;
        }
    }
    /* env: root attributes in creation order when tracked, else by name */
    {
        env_iter it = { env };
        hsize_t idx = 0;
        if (H5Aiterate2(fid, H5_INDEX_CRT_ORDER, H5_ITER_INC, &idx, env_attr_cb, &it) < 0) {
            ab_env_free(env);
            idx = 0;
            H5Aiterate2(fid, H5_INDEX_NAME, H5_ITER_INC, &idx, env_attr_cb, &it);
        }
    }
    rc = 0;
cleanup:
    free(rows);
    if (sg >= 0) H5Gclose(sg);
    if (mt >= 0) H5Tclose(mt);
    if (dsp >= 0) H5Sclose(dsp);
    if (dt >= 0) H5Tclose(dt);
    if (ds >= 0) H5Dclose(ds);
    if (asp >= 0) H5Sclose(asp);
    if (at >= 0) H5Tclose(at);
    if (a >= 0) H5Aclose(a);
    if (fid >= 0) H5Fclose(fid);
    if (fapl >= 0) H5Pclose(fapl);
    return rc;
}

/* 1 if an HDF5 superblock signature is at offset 0 or 512 * 2^k. */
static int has_h5_signature(const unsigned char *b, size_t len)
{
    static const unsigned char sig[8] = { 0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n' };
    for (size_t off = 0; off + 8 <= len; off = off ? off * 2 : 512)
        if (memcmp(b + off, sig, 8) == 0)
            return 1;
    return 0;
}

static int h5_load_inproc(const char *path, pset *set, ab_env *env, char *err, size_t errlen)
{
    int rc = -1;
    unsigned char *buf = NULL;
    struct stat sb;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return fail(err, errlen, "cannot open %s: %s", path, strerror(errno));
    if (fstat(fd, &sb) < 0) {
        fail(err, errlen, "cannot open %s: %s", path, strerror(errno));
        goto cleanup;
    }
    if (S_ISDIR(sb.st_mode)) {
        fail(err, errlen, "cannot read %s: %s", path, strerror(EISDIR));
        goto cleanup;
    }
    if (sb.st_size <= 0) {
        fail(err, errlen, "%s is not an HDF5 file (it is empty)", path);
        goto cleanup;
    }
    if ((unsigned long long)sb.st_size > SIZE_MAX / 2 ||
        !(buf = malloc((size_t)sb.st_size))) {
        fail(err, errlen, "cannot read %s: out of memory (%lld bytes)", path,
             (long long)sb.st_size);
        goto cleanup;
    }
    ssize_t got = read_full(fd, buf, (size_t)sb.st_size);
    if (got < 0) {
        fail(err, errlen, "cannot read %s: %s", path, strerror(errno));
        goto cleanup;
    }
    if (!has_h5_signature(buf, (size_t)got)) {
        fail(err, errlen, "%s is not an HDF5 file", path);
        goto cleanup;
    }
    {
        h5quiet q;
        h5_quiet(&q);
        rc = h5_read_image(path, buf, (size_t)got, set, env, err, errlen);
        h5_restore(&q);
    }
cleanup:
    free(buf);
    close(fd);
    return rc;
}

/* libhdf5 1.10 is not memory-safe on damaged or crafted files (fuzz/
 * fuzz_results found a heap overflow in H5HG_read while reading a root
 * attribute; its CVE list has many more). So the parse runs in a forked
 * child that streams the points and env back through a pipe: a crash or
 * garbage there becomes a one-line "damaged file" error in the caller
 * (show, export, --resume, merge) instead of killing it. The child uses no
 * OpenMP and ends with _exit, so forking any of our processes is safe.
 * A damaged file can also make libhdf5 loop forever (fuzz_results found
 * one), so the child gets a deadline: 60 s plus 1 s per MiB of file, far
 * above a healthy read (~0.3 s CPU for 10,000 points, 7 MB); tests set
 * AB_H5_READ_TIMEOUT_S to shorten it.
 * Stream: hdr | n x ab_point | nenv x (name[32], u32 len, len bytes). */
typedef struct load_hdr {
    int32_t rc;
    int32_t nenv;
    uint64_t n;
    char msg[512];
} load_hdr;

static int write_full(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

/* read_full with a deadline (monotonic seconds): -1 with ETIMEDOUT past it. */
static ssize_t read_by(int fd, void *buf, size_t len, double deadline)
{
    char *p = buf;
    size_t got = 0;
    while (got < len) {
        double left = deadline - now_s();
        if (left <= 0) {
            errno = ETIMEDOUT;
            return -1;
        }
        struct pollfd pf = { fd, POLLIN, 0 };
        int pr = poll(&pf, 1, left > 1.0 ? 1000 : (int)(left * 1000) + 1);
        if (pr < 0 && errno != EINTR)
            return -1;
        if (pr <= 0)
            continue;
        ssize_t r = read(fd, p + got, len - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        if (r == 0)
            break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

static void h5_load_child(int fd, const char *path)
{
    pset s = { 0 };
    ab_env e = { 0 };
    load_hdr h;
    memset(&h, 0, sizeof h);
    h.rc = h5_load_inproc(path, &s, &e, h.msg, sizeof h.msg);
    h.n = h.rc == 0 ? s.n : 0;
    h.nenv = h.rc == 0 ? e.n : 0;
    if (write_full(fd, &h, sizeof h) < 0)
        _exit(3);
    for (size_t i = 0; i < h.n; i++)
        if (write_full(fd, &s.v[i], sizeof s.v[i]) < 0)
            _exit(3);
    for (int i = 0; i < h.nenv; i++) {
        const char *v = e.value[i] ? e.value[i] : "";
        uint32_t l = (uint32_t)strlen(v);
        char name[sizeof e.name[0]] = { 0 }; /* no stray stack bytes down the pipe */
        strncpy(name, e.name[i], sizeof name - 1);
        if (write_full(fd, name, sizeof name) < 0 || write_full(fd, &l, sizeof l) < 0 ||
            write_full(fd, v, l) < 0)
            _exit(3);
    }
    _exit(0);
}

static int h5_load(const char *path, pset *set, ab_env *env, char *err, size_t errlen)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0)
        return fail(err, errlen, "cannot read %s: pipe: %s", path, strerror(errno));
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(fds[0]);
        close(fds[1]);
        return fail(err, errlen, "cannot read %s: fork: %s", path, strerror(e));
    }
    if (pid == 0) {
        close(fds[0]);
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the reader */
        h5_load_child(fds[1], path);
    }
    close(fds[1]);
    int rc = -1, proto = 0, timed_out = 0;
    load_hdr h;
    ab_point *p = NULL;
    char *val = NULL;
    struct stat sb;
    double limit = 60.0 + (stat(path, &sb) == 0 ? (double)sb.st_size / 1048576.0 : 0);
    const char *lim_env = getenv("AB_H5_READ_TIMEOUT_S"); /* tests: a shorter limit */
    if (lim_env && atof(lim_env) > 0)
        limit = atof(lim_env);
    double deadline = now_s() + limit;
#define READ(buf, len) (read_by(fds[0], (buf), (len), deadline) == (ssize_t)(len) || \
                        ((timed_out = errno == ETIMEDOUT), 0))
    if (!READ(&h, sizeof h))
        goto done;
    h.msg[sizeof h.msg - 1] = '\0';
    if (h.rc != 0) {
        proto = 1;
        fail(err, errlen, "%s", h.msg);
        goto done;
    }
    if (h.n > SIZE_MAX / sizeof(ab_point) / 2 || h.nenv < 0 || h.nenv > AB_ENV_MAX ||
        pset_reserve(set, (size_t)h.n) < 0 || !(p = malloc(sizeof *p))) {
        proto = 1;
        fail(err, errlen, "cannot read %s: out of memory for %llu points", path, (unsigned long long)h.n);
        goto done;
    }
    for (uint64_t i = 0; i < h.n; i++) {
        if (!READ(p, sizeof *p))
            goto done;
        point_sanitize(p);
        pset_put(set, p); /* cannot fail after the reserve */
    }
    for (int i = 0; i < h.nenv; i++) {
        char name[sizeof env->name[0]];
        uint32_t l;
        if (!READ(name, sizeof name) || !READ(&l, sizeof l) || l > (1u << 30) ||
            !(val = malloc((size_t)l + 1)) || !READ(val, l))
            goto done;
        name[sizeof name - 1] = '\0';
        val[l] = '\0';
        ab_env_set(env, name, val);
        free(val);
        val = NULL;
    }
    rc = 0;
#undef READ
done:
    free(val);
    free(p);
    close(fds[0]);
    if (timed_out)
        kill(pid, SIGKILL);
    int ws = 0;
    while (waitpid(pid, &ws, 0) < 0 && errno == EINTR) {
    }
    if (rc < 0 && !proto) {
        if (timed_out)
            fail(err, errlen, "%s is a damaged HDF5 file (libhdf5 did not finish reading it within %.0f s)", path, limit);
        else if (WIFSIGNALED(ws))
            fail(err, errlen, "%s is a damaged HDF5 file (libhdf5 crashed reading it: %s)", path,
                 strsignal(WTERMSIG(ws)));
        else
            fail(err, errlen, "%s is a damaged HDF5 file (its reader stopped early, status %d)", path,
                 WIFEXITED(ws) ? WEXITSTATUS(ws) : -1);
    }
    if (rc < 0)
        ab_env_free(env);
    return rc;
}

typedef struct jheader {
    char magic[8];
    uint32_t point_size;
    uint32_t schema;
} jheader;

/* Read the journal's complete records into set (later records win). A
 * missing journal is fine (*found = 0); a torn tail ends the read silently. */
static int journal_load(const char *jpath, pset *set, int *found, char *err, size_t errlen)
{
    int rc = -1;
    ab_point *p = NULL;
    jheader h;
    crc_table ct;
    *found = 0;
    int fd = open(jpath, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return 0;
        return fail(err, errlen, "cannot open %s: %s", jpath, strerror(errno));
    }
    *found = 1;
    ssize_t got = read_full(fd, &h, sizeof h);
    if (got < 0) {
        fail(err, errlen, "cannot read %s: %s", jpath, strerror(errno));
        goto cleanup;
    }
    if ((size_t)got < sizeof h) { /* torn while being created: empty */
        rc = 0;
        goto cleanup;
    }
    if (memcmp(h.magic, AB_JOURNAL_MAGIC, sizeof h.magic) != 0) {
        fail(err, errlen, "%s is not an attnbench journal", jpath);
        goto cleanup;
    }
    if (h.point_size != sizeof(ab_point)) {
        fail(err, errlen, "%s was written by an attnbench build with %u-byte points, "
             "this build uses %zu: read it with that build or remove it",
             jpath, h.point_size, sizeof(ab_point));
        goto cleanup;
    }
    if (h.schema != AB_SCHEMA_VERSION) {
        fail(err, errlen, "%s has schema version %u, this attnbench reads %d",
             jpath, h.schema, AB_SCHEMA_VERSION);
        goto cleanup;
    }
    if (!(p = malloc(sizeof *p))) {
        fail(err, errlen, "cannot read %s: out of memory", jpath);
        goto cleanup;
    }
    crc32_init(&ct);
    for (;;) {
        uint32_t rh[2], crc;
        got = read_full(fd, rh, sizeof rh);
        if (got < 0) {
            fail(err, errlen, "cannot read %s: %s", jpath, strerror(errno));
            goto cleanup;
        }
        if ((size_t)got < sizeof rh || rh[0] != AB_JREC_MAGIC || rh[1] != sizeof *p)
            break;
        if (read_full(fd, p, sizeof *p) != (ssize_t)sizeof *p ||
            read_full(fd, &crc, sizeof crc) != (ssize_t)sizeof crc ||
            crc != crc32_calc(&ct, p, sizeof *p))
            break;
        point_sanitize(p);
        if (!key_ok(p->key))
            continue;
        if (pset_put(set, p) < 0) {
            fail(err, errlen, "cannot read %s: out of memory", jpath);
            goto cleanup;
        }
    }
    rc = 0;
cleanup:
    free(p);
    close(fd);
    return rc;
}

/* OUT plus its leftover journal (journal wins by key). missing_ok: neither
 * existing is an empty result instead of an error. The journal is read
 * first, so a reader racing a writer's final rewrite misses nothing. */
static int results_load(const char *path, const char *jpath, pset *set, ab_env *env,
                        int missing_ok, char *err, size_t errlen)
{
    pset jset = { 0 };
    int jfound = 0, rc = -1;
    struct stat sb;
    if (journal_load(jpath, &jset, &jfound, err, errlen) < 0)
        goto cleanup;
    if (stat(path, &sb) == 0 || errno != ENOENT || (!jfound && !missing_ok)) {
        if (h5_load(path, set, env, err, errlen) < 0)
            goto cleanup;
    }
    if (pset_reserve(set, jset.n) < 0) {
        fail(err, errlen, "cannot read %s: out of memory", jpath);
        goto cleanup;
    }
    for (size_t i = 0; i < jset.n; i++)
        pset_put(set, &jset.v[i]); /* cannot fail after the reserve */
    rc = 0;
cleanup:
    pset_free(&jset);
    return rc;
}

int ab_results_read(const char *path, ab_point **pts, size_t *n, ab_env *env,
                    char *err, size_t errlen)
{
    pset set = { 0 };
    ab_env e = { 0 };
    int rc = -1;
    char *jpath = NULL;
    if (pts)
        *pts = NULL;
    if (n)
        *n = 0;
    if (!path || !*path || !pts || !n)
        return fail(err, errlen, "ab_results_read: invalid arguments");
    if (!(jpath = cat_path(path, ".journal")))
        return fail(err, errlen, "cannot read %s: out of memory", path);
    if (results_load(path, jpath, &set, &e, 0, err, errlen) < 0)
        goto cleanup;
    if (env)
        for (int i = 0; i < e.n; i++)
            ab_env_set(env, e.name[i], e.value[i]);
    *n = set.n;
    *pts = set.v; /* ownership passes to the caller: free(*pts) */
    set.v = NULL;
    rc = 0;
cleanup:
    ab_env_free(&e);
    pset_free(&set);
    free(jpath);
    return rc;
}

/* ---- the store ---------------------------------------------------------- */

struct ab_store {
    char *path, *tmp, *jpath, *jtmp;
    ab_env env;
    pset set;
    int jfd;             /* journal, open for writing; -1 after close */
    off_t joff;          /* end of the last complete record */
    int jbroken;         /* a failed append could not be rolled back */
    unsigned char *rec;  /* one record's buffer */
    size_t reclen;
    crc_table crc;
    pid_t owner;         /* the process that opened the store */
    double last_write;   /* monotonic seconds of the last rewrite */
    double interval;     /* seconds between rewrites while appending */
    int dirty;           /* points not yet in OUT */
};

static void store_free(ab_store *st)
{
    if (!st)
        return;
    if (st->jfd >= 0)
        close(st->jfd);
    ab_env_free(&st->env);
    pset_free(&st->set);
    free(st->rec);
    free(st->path);
    free(st->tmp);
    free(st->jpath);
    free(st->jtmp);
    free(st);
}

static int store_rewrite(ab_store *st, char *err, size_t errlen)
{
    void *img = NULL;
    size_t len = 0;
    double t0 = now_s();
    if (build_image(&st->env, &st->set, &img, &len, st->path, NULL, 0, err, errlen) < 0)
        return -1;
    int rc = write_atomic(st->path, st->tmp, img, len, err, errlen);
    free(img);
    if (rc == 0) {
        st->last_write = now_s();
        st->dirty = 0;
        /* at most once a second, and never more than ~10% of the time: a
         * huge file is rewritten less often (the journal covers the gap) */
        st->interval = 10.0 * (st->last_write - t0);
        if (st->interval < AB_REWRITE_INTERVAL_S)
            st->interval = AB_REWRITE_INTERVAL_S;
        /* OUT (renamed and its directory synced) now holds every journaled
         * point: restart the journal after its header, so it stays small. On
         * failure it just keeps growing (duplicates of OUT are harmless). */
        if (st->jfd >= 0 && !st->jbroken && ftruncate(st->jfd, (off_t)sizeof(jheader)) == 0) {
            st->joff = (off_t)sizeof(jheader);
            fdatasync(st->jfd);
        }
    }
    return rc;
}

/* Create the journal (header only) under its temporary name; returns the fd. */
static int journal_create(const char *jtmp, char *err, size_t errlen)
{
    jheader h;
    memset(&h, 0, sizeof h);
    memcpy(h.magic, AB_JOURNAL_MAGIC, sizeof h.magic);
    h.point_size = (uint32_t)sizeof(ab_point);
    h.schema = AB_SCHEMA_VERSION;
    int fd = open(jtmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return fail(err, errlen, "cannot create %s: %s", jtmp, strerror(errno));
    if (write_all(fd, &h, sizeof h, 0) < 0 || fdatasync(fd) < 0) {
        int e = errno;
        close(fd);
        unlink(jtmp);
        return fail(err, errlen, "cannot write %s: %s", jtmp, strerror(e));
    }
    return fd;
}

int ab_store_open(const char *path, const ab_env *env, int resume,
                  ab_store **out, char *err, size_t errlen)
{
    ab_store *st = NULL;
    if (out)
        *out = NULL;
    if (!path || !*path || !out)
        return fail(err, errlen, "ab_store_open: invalid arguments");
    if (!(st = calloc(1, sizeof *st)))
        return fail(err, errlen, "cannot open %s: out of memory", path);
    st->jfd = -1;
    st->owner = getpid();
    st->reclen = 2 * sizeof(uint32_t) + sizeof(ab_point) + sizeof(uint32_t);
    crc32_init(&st->crc);
    if (!(st->path = cat_path(path, "")) || !(st->tmp = cat_path(path, ".tmp")) ||
        !(st->jpath = cat_path(path, ".journal")) ||
        !(st->jtmp = cat_path(path, ".journal.tmp")) || !(st->rec = malloc(st->reclen))) {
        fail(err, errlen, "cannot open %s: out of memory", path);
        goto fail_free;
    }
    for (int i = 0; env && i < env->n && i < AB_ENV_MAX; i++)
        ab_env_set(&st->env, env->name[i], env->value[i]);

    /* 1. load what is there (nothing is touched if this fails) */
    if (resume) {
        ab_env old = { 0 };
        int rc = results_load(st->path, st->jpath, &st->set, &old, 1, err, errlen);
        ab_env_free(&old); /* the new run's env replaces the old one */
        if (rc < 0)
            goto fail_free;
    }
    /* 2. a fresh journal under a temporary name (probes the directory) */
    int fd = journal_create(st->jtmp, err, errlen);
    if (fd < 0)
        goto fail_free;
    /* 3. OUT with every loaded point (some may have come only from the old
     *    journal), or empty: from here on a file exists */
    if (store_rewrite(st, err, errlen) < 0) {
        close(fd);
        unlink(st->jtmp);
        goto fail_free;
    }
    /* 4. the fresh journal replaces the old one, whose points OUT now holds */
    if (rename(st->jtmp, st->jpath) < 0 || fsync_dir(st->jpath) < 0) {
        int e = errno;
        close(fd);
        unlink(st->jtmp);
        fail(err, errlen, "cannot create %s: %s", st->jpath, strerror(e));
        goto fail_free;
    }
    st->jfd = fd;
    st->joff = (off_t)sizeof(jheader);
    *out = st;
    return 0;
fail_free:
    store_free(st);
    return -1;
}

const ab_point *ab_store_get(const ab_store *st, const char *key)
{
    if (!st || !key)
        return NULL;
    size_t i = pset_find(&st->set, key);
    return i == SIZE_MAX ? NULL : &st->set.v[i];
}

int ab_store_has(const ab_store *st, const char *key)
{
    const ab_point *p = ab_store_get(st, key);
    return p && ab_status_is_final(p->status);
}

size_t ab_store_count(const ab_store *st)
{
    return st ? st->set.n : 0;
}

int ab_store_append(ab_store *st, const ab_point *p, char *err, size_t errlen)
{
    if (!st || !p)
        return fail(err, errlen, "ab_store_append: invalid arguments");
    if (getpid() != st->owner)
        return fail(err, errlen, "results store %s used from a forked child (refused)",
                    st->path);
    if (st->jfd < 0 || st->jbroken)
        return fail(err, errlen, "journal %s is unusable after an earlier write error",
                    st->jpath);
    if (!key_ok(p->key))
        return fail(err, errlen, "cannot store a point with an invalid key \"%.*s\"",
                    (int)sizeof p->key, p->key);
    /* room first: once journaled, the point must also make it into memory */
    if (pset_reserve(&st->set, 1) < 0)
        return fail(err, errlen, "cannot store a point in %s: out of memory", st->path);

    uint32_t hdr[2] = { AB_JREC_MAGIC, (uint32_t)sizeof(ab_point) };
    ab_point *q = (ab_point *)(void *)(st->rec + sizeof hdr);
    memcpy(st->rec, hdr, sizeof hdr);
    memcpy(q, p, sizeof *q);
    point_sanitize(q);
    uint32_t crc = crc32_calc(&st->crc, q, sizeof *q);
    memcpy(st->rec + sizeof hdr + sizeof *q, &crc, sizeof crc);

    if (write_all(st->jfd, st->rec, st->reclen, st->joff) < 0 || fdatasync(st->jfd) < 0) {
        int e = errno;
        /* drop the partial record, or later records would be unreadable */
        if (ftruncate(st->jfd, st->joff) < 0)
            st->jbroken = 1;
        return fail(err, errlen, "cannot write %s: %s", st->jpath, strerror(e));
    }
    st->joff += (off_t)st->reclen;
    pset_put(&st->set, q); /* cannot fail after the reserve */
    st->dirty = 1;

    if (now_s() - st->last_write >= st->interval)
        return store_rewrite(st, err, errlen); /* the point is safe in the journal
                                                 * even if this fails */
    return 0;
}

int ab_store_close(ab_store *st, char *err, size_t errlen)
{
    int rc = 0;
    if (!st)
        return 0;
    if (getpid() != st->owner) {
        store_free(st);
        return fail(err, errlen, "results store closed from a forked child (nothing written)");
    }
    if (st->dirty)
        rc = store_rewrite(st, err, errlen);
    if (rc == 0) {
        /* OUT holds everything: the journal has done its job */
        if (st->jfd >= 0) {
            close(st->jfd);
            st->jfd = -1;
        }
        if (unlink(st->jpath) < 0 && errno != ENOENT)
            rc = fail(err, errlen, "cannot remove %s: %s", st->jpath, strerror(errno));
        else
            fsync_dir(st->jpath);
    }
    store_free(st);
    return rc;
}

void ab_store_abandon(ab_store *st)
{
    store_free(st);
}

int ab_results_write(const char *path, const ab_point *pts, size_t n, const ab_env *env,
                     const ab_env *shards, int nshards, char *err, size_t errlen)
{
    pset set = { 0 };
    void *img = NULL;
    size_t len = 0;
    char *tmp = NULL, *jpath = NULL;
    int rc = -1;
    if (!path || !*path || (n && !pts))
        return fail(err, errlen, "ab_results_write: invalid arguments");
    if (!(tmp = cat_path(path, ".tmp")) || !(jpath = cat_path(path, ".journal")) ||
        pset_reserve(&set, n) < 0) {
        fail(err, errlen, "cannot write %s: out of memory", path);
        goto cleanup;
    }
    for (size_t i = 0; i < n; i++) {
        if (!key_ok(pts[i].key)) {
            fail(err, errlen, "cannot write %s: point %zu has an invalid key", path, i);
            goto cleanup;
        }
        pset_put(&set, &pts[i]); /* cannot fail after the reserve */
        point_sanitize(&set.v[pset_find(&set, pts[i].key)]);
    }
    if (build_image(env, &set, &img, &len, path, shards, nshards, err, errlen) < 0 ||
        write_atomic(path, tmp, img, len, err, errlen) < 0)
        goto cleanup;
    /* a journal left by an earlier writer of PATH would be merged into it by readers */
    if (unlink(jpath) == 0)
        fsync_dir(jpath);
    rc = 0;
cleanup:
    free(img);
    free(tmp);
    free(jpath);
    pset_free(&set);
    return rc;
}
