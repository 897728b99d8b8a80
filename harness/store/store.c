/* store.c — results storage (store.h): the HDF5 file of the README ("Results file") made
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
 * The journal OUT.journal is journal.c's (its format is in journal.h); the
 * point set, CRC, file I/O and the atomic rewrite have files of their own
 * too (pset.c, crc32.c, fdio.c, atomic.c); this file is the HDF5 schema and
 * the store API.
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
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness/store/atomic.h"
#include "harness/store/fdio.h"
#include "harness/store/journal.h"
#include "harness/store/pset.h"
#include "runtime/errors.h"
#include "runtime/isolate.h"

#define AB_REWRITE_INTERVAL_S 1.0
#define AB_POINTS_CHUNK       64
/* Labels for in-memory HDF5 files: paths that can never exist on disk (the
 * core driver refuses to open an image under the name of an existing file). */
#define AB_IMAGE_LABEL_W "/dev/null/attnbench-write-image"
#define AB_IMAGE_LABEL_R "/dev/null/attnbench-read-image"

/* ---- small helpers ------------------------------------------------------ */

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

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- the fields of ab_point that form a /points row ---------------------- */

enum { F_STR, F_I32, F_I64, F_F64 };
typedef struct field_desc {
    const char *name;
    size_t off, size;
    int kind;
} field_desc;

#define FLD(f, k)                                                \
    {                                                            \
#f, offsetof(ab_point, f), sizeof(((ab_point *)0)->f), k \
    }
static const field_desc point_fields[] = {
    FLD(key, F_STR),
    FLD(method, F_STR),
    FLD(params, F_STR),
    FLD(device, F_STR),
    FLD(dtype, F_STR),
    FLD(task, F_STR),
    FLD(kernel, F_STR),
    FLD(layout, F_STR),
    FLD(family, F_STR),
    FLD(block_q, F_I32),
    FLD(block_k, F_I32),
    FLD(seq_len, F_I32),
    FLD(heads, F_I32),
    FLD(head_dim, F_I32),
    FLD(causal, F_I32),
    FLD(mask, F_STR),
    FLD(mask_density, F_F64),
    FLD(threads, F_I32),
    FLD(seed, F_I64),
    FLD(depth, F_F64),
    FLD(target_density, F_F64),
    FLD(knob_value, F_F64),
    FLD(achieved_density, F_F64),
    FLD(select_flops, F_F64),
    FLD(select_bytes, F_F64),
    FLD(select_ms, F_F64),
    FLD(run_ms, F_F64),
    FLD(total_ms, F_F64),
    FLD(min_ms, F_F64),
    FLD(p10_ms, F_F64),
    FLD(p90_ms, F_F64),
    FLD(cv, F_F64),
    FLD(n_samples, F_I32),
    FLD(dense_gflops, F_F64),
    FLD(recall_mass, F_F64),
    FLD(recall_topk, F_F64),
    FLD(rel_l2_err, F_F64),
    FLD(max_abs_err, F_F64),
    FLD(accuracy, F_F64),
    FLD(acc_ci_lo, F_F64),
    FLD(acc_ci_hi, F_F64),
    FLD(acc_trials, F_I32),
    FLD(rows_scored, F_I32),
    FLD(status, F_STR),
    FLD(message, F_STR),
    FLD(rounds, F_I32),
    FLD(calls, F_I32),
    FLD(total_lo_ms, F_F64),
    FLD(total_hi_ms, F_F64),
    FLD(dense_pair_ms, F_F64),
    FLD(rel_dense, F_F64),
    FLD(rel_lo, F_F64),
    FLD(rel_hi, F_F64),
    FLD(foreign_pct, F_F64),
    FLD(steal_pct, F_F64),
    FLD(load1, F_F64),
    FLD(fma_gflops, F_F64),
    FLD(shared_pct, F_F64),
    FLD(point_s, F_F64),
    FLD(timing, F_STR),
    FLD(phase, F_STR),
    FLD(kv_heads, F_I32),
    FLD(batch, F_I32),
    FLD(steps, F_I32),
    FLD(layers, F_I32),
    FLD(layer_corr, F_F64),
    FLD(prepare_ms, F_F64),
    FLD(kv_bytes, F_F64),
    FLD(cache_bytes, F_F64),
    FLD(layer_recall, F_STR),
    FLD(tparams, F_STR),
    FLD(head_recall, F_STR),
};
#undef FLD
#define N_FIELDS (sizeof point_fields / sizeof point_fields[0])

/* NUL-terminate every string, clamp n_samples: whatever came from a file or a
 * caller is safe to print and index afterwards. */
static void point_sanitize(ab_point *p)
{
    for (size_t i = 0; i < N_FIELDS; i++)
        if (point_fields[i].kind == F_STR) ((char *)p)[point_fields[i].off + point_fields[i].size - 1] = '\0';
    if (p->n_samples < 0) p->n_samples = 0;
    if (p->n_samples > AB_MAX_SAMPLES) p->n_samples = AB_MAX_SAMPLES;
}

/* A key names /samples/KEY, so it must be a plain HDF5 link name. */
static int key_ok(const char *key)
{
    size_t n = strnlen(key, sizeof(((ab_point *)0)->key));
    if (n == 0 || n >= sizeof(((ab_point *)0)->key)) return 0;
    if (strcmp(key, ".") == 0 || strcmp(key, "..") == 0) return 0;
    return strchr(key, '/') == NULL;
}

/* Compound type of one row. mem = 1: the layout of ab_point (NATIVE types,
 * size sizeof(ab_point), sample arrays not members); mem = 0: the packed
 * little-endian file type. present (mem = 1 only, may be NULL): include
 * only the fields with present[i] != 0 (those an older file has). */
static hid_t point_type_sub(int mem, const unsigned char *present);
static hid_t point_type(int mem) { return point_type_sub(mem, NULL); }

static hid_t point_type_sub(int mem, const unsigned char *present)
{
    size_t total = 0;
    for (size_t i = 0; i < N_FIELDS; i++) total += point_fields[i].size;
    hid_t t = H5Tcreate(H5T_COMPOUND, mem ? sizeof(ab_point) : total);
    if (t < 0) return -1;
    size_t off = 0;
    for (size_t i = 0; i < N_FIELDS; i++) {
        const field_desc *f = &point_fields[i];
        hid_t m = -1;
        int ok = 1;
        if (present && !present[i]) continue;
        switch (f->kind) {
        case F_STR:
            m = H5Tcopy(H5T_C_S1);
            ok = m >= 0 && H5Tset_size(m, f->size) >= 0 && H5Tset_strpad(m, H5T_STR_NULLTERM) >= 0;
            break;
        case F_I32: m = H5Tcopy(mem ? H5T_NATIVE_INT32 : H5T_STD_I32LE); break;
        case F_I64: m = H5Tcopy(mem ? H5T_NATIVE_INT64 : H5T_STD_I64LE); break;
        default: m = H5Tcopy(mem ? H5T_NATIVE_DOUBLE : H5T_IEEE_F64LE); break;
        }
        ok = ok && m >= 0 && H5Tinsert(t, f->name, mem ? f->off : off, m) >= 0;
        if (m >= 0) H5Tclose(m);
        if (!ok) {
            H5Tclose(t);
            return -1;
        }
        off += f->size;
    }
    return t;
}

/* ---- HDF5 error plumbing ------------------------------------------------ */

typedef struct h5quiet {
    H5E_auto2_t fn;
    void *data;
} h5quiet;

static void h5_quiet(h5quiet *q)
{
    q->fn = NULL;
    q->data = NULL;
    H5Eget_auto2(H5E_DEFAULT, &q->fn, &q->data);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

static void h5_restore(const h5quiet *q) { H5Eset_auto2(H5E_DEFAULT, q->fn, q->data); }

typedef struct errbuf {
    char *buf;
    size_t len;
} errbuf;

static herr_t h5_walk_cb(unsigned n, const H5E_error2_t *e, void *data)
{
    errbuf *eb = data;
    if (n == 0 && e && e->desc) snprintf(eb->buf, eb->len, "%s", e->desc);
    return 0;
}

/* The innermost description on HDF5's error stack (call right after the
 * failing call: the next API call clears the stack). */
static void h5_errdesc(char *buf, size_t len)
{
    errbuf eb = { buf, len };
    buf[0] = '\0';
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, h5_walk_cb, &eb);
    if (!buf[0]) snprintf(buf, len, "HDF5 error");
}

/* ---- building the HDF5 image -------------------------------------------- */

static int attr_write_str(hid_t loc, const char *name, const char *value)
{
    int rc = -1;
    hid_t t = -1, sp = -1, a = -1;
    if ((t = H5Tcopy(H5T_C_S1)) < 0 || H5Tset_size(t, H5T_VARIABLE) < 0 || H5Tset_cset(t, H5T_CSET_UTF8) < 0)
        goto cleanup;
    if ((sp = H5Screate(H5S_SCALAR)) < 0) goto cleanup;
    if ((a = H5Acreate2(loc, name, t, sp, H5P_DEFAULT, H5P_DEFAULT)) < 0) goto cleanup;
    if (H5Awrite(a, t, &value) < 0) goto cleanup;
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
    if ((sp = H5Screate(H5S_SCALAR)) < 0) goto cleanup;
    if ((a = H5Acreate2(loc, name, H5T_STD_I32LE, sp, H5P_DEFAULT, H5P_DEFAULT)) < 0) goto cleanup;
    if (H5Awrite(a, H5T_NATIVE_INT, &value) < 0) goto cleanup;
    rc = 0;
cleanup:
    if (a >= 0) H5Aclose(a);
    if (sp >= 0) H5Sclose(sp);
    return rc;
}

static int write_root_attrs(hid_t fid, const ab_env *env)
{
    if (attr_write_int(fid, "schema_version", AB_SCHEMA_VERSION) < 0) return -1;
    for (int i = 0; env && i < env->n && i < AB_ENV_MAX; i++) {
        if (!env->name[i][0] || strcmp(env->name[i], "schema_version") == 0) continue;
        /* best effort: a name HDF5 refuses must not stop the results */
        attr_write_str(fid, env->name[i], env->value[i] ? env->value[i] : "");
    }
    return 0;
}

static int write_schema(hid_t fid)
{
    int rc = -1;
    hid_t g = H5Gcreate2(fid, "schema", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0) return -1;
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

static int write_points(hid_t fid, const ab_pset *s)
{
    int rc = -1;
    hid_t mt = -1, ft = -1, sp = -1, dcpl = -1, ds = -1;
    hsize_t dims[1] = { (hsize_t)s->n }, maxd[1] = { H5S_UNLIMITED };
    hsize_t chunk[1] = { AB_POINTS_CHUNK };
    unsigned filt = 0;

    if ((mt = point_type(1)) < 0 || (ft = point_type(0)) < 0) goto cleanup;
    if ((sp = H5Screate_simple(1, dims, maxd)) < 0) goto cleanup;
    if ((dcpl = H5Pcreate(H5P_DATASET_CREATE)) < 0 || H5Pset_chunk(dcpl, 1, chunk) < 0) goto cleanup;
    if (H5Zfilter_avail(H5Z_FILTER_DEFLATE) > 0 && H5Zget_filter_info(H5Z_FILTER_DEFLATE, &filt) >= 0 &&
        (filt & H5Z_FILTER_CONFIG_ENCODE_ENABLED) && H5Pset_deflate(dcpl, 1) < 0)
        goto cleanup;
    if ((ds = H5Dcreate2(fid, "points", ft, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT)) < 0) goto cleanup;
    if (s->n && H5Dwrite(ds, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, s->v) < 0) goto cleanup;
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
    if ((sp = H5Screate_simple(2, dims, NULL)) < 0) goto cleanup;
    if ((ds = H5Dcreate2(g, p->key, H5T_IEEE_F64LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT)) < 0) goto cleanup;
    if (H5Dwrite(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) goto cleanup;
    rc = 0;
cleanup:
    if (ds >= 0) H5Dclose(ds);
    if (sp >= 0) H5Sclose(sp);
    return rc;
}

static int write_samples(hid_t fid, const ab_pset *s)
{
    int rc = -1;
    hid_t g = -1, dcpl = -1;
    if ((g = H5Gcreate2(fid, "samples", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)) < 0) goto cleanup;
    if (attr_write_str(g, "columns", "round,calls,select_ms,run_ms,dense_ms") < 0 ||
        attr_write_str(g, "units", "ms") < 0)
        goto cleanup;
    /* at most 10 KiB per point: compact (inside the object header) */
    if ((dcpl = H5Pcreate(H5P_DATASET_CREATE)) < 0 || H5Pset_layout(dcpl, H5D_COMPACT) < 0) goto cleanup;
    for (size_t i = 0; i < s->n; i++) {
        const ab_point *p = &s->v[i];
        if (p->n_samples > 0 && key_ok(p->key) && write_one_samples(g, dcpl, p) < 0) goto cleanup;
    }
    rc = 0;
cleanup:
    if (dcpl >= 0) H5Pclose(dcpl);
    if (g >= 0) H5Gclose(g);
    return rc;
}

/* Build the whole results file in memory; *img is malloc'd (free()). */
static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* `run --save-tensors` leaves one small HDF5 file per problem and point in
 * PATH.tensors/ (harness/engine/tensors.c); copy each into /tensors/NAME, in name
 * order. No directory: nothing to do. */
static int write_tensors(hid_t fid, const char *path)
{
    char dir[1200];
    snprintf(dir, sizeof dir, "%s.tensors", path);
    DIR *dp = opendir(dir);
    if (!dp) return 0;
    char **names = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    struct dirent *de;
    while ((de = readdir(dp))) {
        size_t l = strlen(de->d_name);
        if (de->d_name[0] == '.' || l < 4 || strcmp(de->d_name + l - 3, ".h5")) continue;
        if (n == cap) {
            char **nn = realloc(names, (cap = cap ? 2 * cap : 64) * sizeof *names);
            if (!nn) {
                rc = -1;
                break;
            }
            names = nn;
        }
        if (!(names[n] = strdup(de->d_name))) {
            rc = -1;
            break;
        }
        n++;
    }
    closedir(dp);
    if (n) qsort(names, n, sizeof *names, cmp_str);
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    if (lcpl < 0 || H5Pset_create_intermediate_group(lcpl, 1) < 0) rc = -1;
    for (size_t i = 0; i < n && rc == 0; i++) {
        char src[1400], dst[300];
        snprintf(src, sizeof src, "%s/%s", dir, names[i]);
        snprintf(dst, sizeof dst, "/tensors/%.*s", (int)(strlen(names[i]) - 3), names[i]);
        hid_t f = H5Fopen(src, H5F_ACC_RDONLY, H5P_DEFAULT);
        if (f < 0) continue; /* a torn file from a killed child: its point is not stored either */
        if (H5Ocopy(f, ".", fid, dst, H5P_DEFAULT, lcpl) < 0) rc = -1;
        H5Fclose(f);
    }
    if (lcpl >= 0) H5Pclose(lcpl);
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    return rc;
}

/* /shards/shard_I: the environment of each input of `attnbench merge`. */
static int write_shards(hid_t fid, const ab_env *shards, int nshards)
{
    if (nshards <= 0) return 0;
    hid_t g = H5Gcreate2(fid, "shards", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0) return -1;
    int rc = attr_write_str(g, "about",
                            "one group per merged input file, in merge order: "
                            "its root attributes (the run environment of that shard)");
    for (int i = 0; i < nshards && rc == 0; i++) {
        char name[32];
        snprintf(name, sizeof name, "shard_%d", i);
        hid_t sg = H5Gcreate2(g, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        if (sg < 0) {
            rc = -1;
            break;
        }
        for (int k = 0; k < shards[i].n && k < AB_ENV_MAX; k++)
            if (shards[i].name[k][0]) /* best effort, as for the root */
                attr_write_str(sg, shards[i].name[k], shards[i].value[k] ? shards[i].value[k] : "");
        H5Gclose(sg);
    }
    H5Gclose(g);
    return rc;
}

static int build_image(const ab_env *env, const ab_pset *s, void **img, size_t *len, const char *path,
                       const ab_env *shards, int nshards, char *err, size_t errlen)
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
    if ((fapl = H5Pcreate(H5P_FILE_ACCESS)) < 0 || H5Pset_fapl_core(fapl, (size_t)1 << 20, 0) < 0 ||
        H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG) < 0)
        goto h5err;
    /* root attributes keep their creation order (the env order) */
    if ((fcpl = H5Pcreate(H5P_FILE_CREATE)) < 0 ||
        H5Pset_attr_creation_order(fcpl, H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED) < 0)
        goto h5err;
    if ((fid = H5Fcreate(AB_IMAGE_LABEL_W, H5F_ACC_TRUNC, fcpl, fapl)) < 0) goto h5err;
    what = "writing the root attributes";
    if (write_root_attrs(fid, env) < 0) goto h5err;
    what = "writing /shards";
    if (write_shards(fid, shards, nshards) < 0) goto h5err;
    what = "writing /schema";
    if (write_schema(fid) < 0) goto h5err;
    what = "writing /points";
    if (write_points(fid, s) < 0) goto h5err;
    what = "writing /samples";
    if (write_samples(fid, s) < 0) goto h5err;
    what = "copying the saved tensors into /tensors";
    if (write_tensors(fid, path) < 0) goto h5err;
    what = "taking the file image";
    if (H5Fflush(fid, H5F_SCOPE_GLOBAL) < 0) goto h5err;
    ssize_t sz = H5Fget_file_image(fid, NULL, 0);
    if (sz <= 0) goto h5err;
    if (!(buf = malloc((size_t)sz))) {
        ab_fail(err, errlen, -1, "cannot write %s: out of memory (%zd-byte image)", path, sz);
        goto cleanup;
    }
    if (H5Fget_file_image(fid, buf, (size_t)sz) != sz) goto h5err;
    *img = buf;
    *len = (size_t)sz;
    buf = NULL;
    rc = 0;
    goto cleanup;
h5err:
    h5_errdesc(h5msg, sizeof h5msg);
    ab_fail(err, errlen, -1, "cannot write %s: HDF5 failed while %s (%s)", path, what, h5msg);
cleanup:
    free(buf);
    if (fid >= 0) H5Fclose(fid);
    if (fcpl >= 0) H5Pclose(fcpl);
    if (fapl >= 0) H5Pclose(fapl);
    h5_restore(&q);
    return rc;
}

/* ---- reading ------------------------------------------------------------ */

typedef struct env_iter {
    ab_env *env;
} env_iter;

static herr_t env_attr_cb(hid_t loc, const char *name, const H5A_info_t *info, void *data)
{
    env_iter *it = data;
    hid_t a = -1, t = -1, sp = -1, mt = -1;
    char *fixed = NULL;
    (void)info;
    if (strcmp(name, "schema_version") == 0) return 0;
    if ((a = H5Aopen(loc, name, H5P_DEFAULT)) < 0 || (t = H5Aget_type(a)) < 0 || (sp = H5Aget_space(a)) < 0)
        goto cleanup;
    if (H5Tget_class(t) != H5T_STRING || H5Sget_simple_extent_npoints(sp) != 1)
        goto cleanup; /* not an env string: ignore */
    /* HDF5 converts no strings between character sets: read in the file's */
    H5T_cset_t cset = H5Tget_cset(t);
    if ((mt = H5Tcopy(H5T_C_S1)) < 0 || cset < 0 || H5Tset_cset(mt, cset) < 0) goto cleanup;
    if (H5Tis_variable_str(t) > 0) {
        char *s = NULL;
        if (H5Tset_size(mt, H5T_VARIABLE) < 0 || H5Aread(a, mt, &s) < 0) goto cleanup;
        ab_env_set(it->env, name, s ? s : "");
        if (s) H5free_memory(s);
    } else {
        size_t n = H5Tget_size(t);
        if (n == 0 || n > ((size_t)1 << 30) || !(fixed = calloc(n + 1, 1))) goto cleanup;
        if (H5Tset_size(mt, n + 1) < 0 || H5Aread(a, mt, fixed) < 0) goto cleanup;
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
    if (H5Lexists(g, p->key, H5P_DEFAULT) <= 0) return;
    if ((ds = H5Dopen2(g, p->key, H5P_DEFAULT)) < 0 || (sp = H5Dget_space(ds)) < 0) goto cleanup;
    if (H5Sget_simple_extent_ndims(sp) != 2 || H5Sget_simple_extent_dims(sp, dims, NULL) < 0 ||
        (dims[1] != 2 && dims[1] != AB_SAMPLE_COLS) || dims[0] > AB_MAX_SAMPLES)
        goto cleanup;
    if (dims[0] > 0 && H5Dread(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) goto cleanup;
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
    while (i < N_FIELDS && strcmp(point_fields[i].name, name)) i++;
    return i;
}

/* Fields an older file lacks: a number is NaN (not recorded), an integer
 * or a string empty, except the base mask of files written before base
 * masks, which was plain causal or full by the causal column. */
static void point_defaults(ab_point *p, const unsigned char *present)
{
    for (size_t i = 0; i < N_FIELDS; i++) {
        const field_desc *f = &point_fields[i];
        if (present[i] || f->kind != F_F64) continue;
        const double nan = NAN;
        memcpy((char *)p + f->off, &nan, sizeof nan);
    }
    if (!present[field_index("phase")]) snprintf(p->phase, sizeof p->phase, "prefill");
    if (!present[field_index("kv_heads")]) p->kv_heads = p->heads;
    if (!present[field_index("batch")]) p->batch = 1;
    if (!present[field_index("layers")]) p->layers = 1;
    if (!present[field_index("mask")]) snprintf(p->mask, sizeof p->mask, "%s", p->causal ? "causal" : "full");
    if (!present[field_index("mask_density")]) {
        const double n = p->seq_len > 0 ? (double)p->seq_len : 1.0;
        p->mask_density = p->causal ? (n + 1.0) / (2.0 * n) : 1.0;
    }
}

/* The rows of /points in file fid (*rows: n points, NULL when none; the
 * caller frees it), the fields an older file lacks set to their defaults. */
static int read_rows(hid_t fid, const char *path, ab_point **rows_out, hsize_t *n_out, char *err,
                     size_t errlen)
{
    int rc = -1;
    hid_t ds = -1, dt = -1, dsp = -1, mt = -1;
    ab_point *rows = NULL;
    unsigned char present[N_FIELDS];
    char h5msg[160] = "";
    hsize_t n = 0;

    if (H5Lexists(fid, "points", H5P_DEFAULT) <= 0 || (ds = H5Dopen2(fid, "points", H5P_DEFAULT)) < 0 ||
        (dt = H5Dget_type(ds)) < 0 || H5Tget_class(dt) != H5T_COMPOUND || (dsp = H5Dget_space(ds)) < 0 ||
        H5Sget_simple_extent_ndims(dsp) != 1 || H5Sget_simple_extent_dims(dsp, &n, NULL) < 0) {
        ab_fail(err, errlen, -1, "%s is not an attnbench results file (no readable /points)", path);
        goto cleanup;
    }
    if (n > (hsize_t)(SIZE_MAX / sizeof(ab_point) / 2)) {
        ab_fail(err, errlen, -1, "%s: /points is implausibly large (%llu rows)", path, (unsigned long long)n);
        goto cleanup;
    }
    if (n > 0) {
        if (!(rows = calloc((size_t)n, sizeof *rows))) {
            ab_fail(err, errlen, -1, "cannot read %s: out of memory for %llu points", path,
                    (unsigned long long)n);
            goto cleanup;
        }
        /* Read the fields the file has: a file written before a field
         * existed (mask, mask_density: base masks) still reads, the
         * missing fields get defaults below. */
        for (size_t i = 0; i < N_FIELDS; i++) present[i] = H5Tget_member_index(dt, point_fields[i].name) >= 0;
        if (!present[field_index("key")]) {
            ab_fail(err, errlen, -1, "%s is not an attnbench results file (/points has no key field)", path);
            goto cleanup;
        }
        if ((mt = point_type_sub(1, present)) < 0 ||
            H5Dread(ds, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, rows) < 0) {
            h5_errdesc(h5msg, sizeof h5msg);
            ab_fail(err, errlen, -1, "cannot read /points of %s (%s)", path, h5msg);
            goto cleanup;
        }
        for (size_t r = 0; r < (size_t)n; r++) point_defaults(&rows[r], present);
    }
    *rows_out = rows;
    *n_out = n;
    rows = NULL;
    rc = 0;
cleanup:
    free(rows);
    if (mt >= 0) H5Tclose(mt);
    if (dsp >= 0) H5Sclose(dsp);
    if (dt >= 0) H5Tclose(dt);
    if (ds >= 0) H5Dclose(ds);
    return rc;
}

/* Open file image `img` and read its points and env into set/env. */
static int h5_read_image(const char *path, const void *img, size_t len, ab_pset *set, ab_env *env, char *err,
                         size_t errlen)
{
    int rc = -1;
    hid_t fapl = -1, fid = -1, a = -1, at = -1, asp = -1, sg = -1;
    ab_point *rows = NULL;
    char h5msg[160] = "";
    int ver = 0;
    hsize_t n = 0;

    if ((fapl = H5Pcreate(H5P_FILE_ACCESS)) < 0 || H5Pset_fapl_core(fapl, (size_t)1 << 20, 0) < 0 ||
        H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG) < 0 || H5Pset_file_image(fapl, (void *)img, len) < 0) {
        h5_errdesc(h5msg, sizeof h5msg);
        ab_fail(err, errlen, -1, "cannot read %s: %s", path, h5msg);
        goto cleanup;
    }
    if ((fid = H5Fopen(AB_IMAGE_LABEL_R, H5F_ACC_RDONLY, fapl)) < 0) {
        h5_errdesc(h5msg, sizeof h5msg);
        ab_fail(err, errlen, -1, "%s is a damaged HDF5 file (%s)", path, h5msg);
        goto cleanup;
    }
    if (H5Aexists(fid, "schema_version") <= 0) {
        ab_fail(err, errlen, -1, "%s is not an attnbench results file", path);
        goto cleanup;
    }
    if ((a = H5Aopen(fid, "schema_version", H5P_DEFAULT)) < 0 || (at = H5Aget_type(a)) < 0 ||
        (asp = H5Aget_space(a)) < 0 || H5Tget_class(at) != H5T_INTEGER ||
        H5Sget_simple_extent_npoints(asp) != 1 || H5Aread(a, H5T_NATIVE_INT, &ver) < 0) {
        ab_fail(err, errlen, -1, "%s is not an attnbench results file (bad schema_version)", path);
        goto cleanup;
    }
    if (ver != AB_SCHEMA_VERSION) {
        ab_fail(err, errlen, -1, "%s has schema version %d, this attnbench reads %d", path, ver,
                AB_SCHEMA_VERSION);
        goto cleanup;
    }
    if (read_rows(fid, path, &rows, &n, err, errlen) < 0) goto cleanup;
    if (H5Lexists(fid, "samples", H5P_DEFAULT) > 0) sg = H5Gopen2(fid, "samples", H5P_DEFAULT);
    if (ab_pset_reserve(set, (size_t)n) < 0) {
        ab_fail(err, errlen, -1, "cannot read %s: out of memory", path);
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
        if (sg >= 0 && p->n_samples > 0 && key_ok(p->key)) read_one_samples(sg, p);
        if (ab_pset_put(set, p) < 0) {
            ab_fail(err, errlen, -1, "cannot read %s: out of memory", path);
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
        if (memcmp(b + off, sig, 8) == 0) return 1;
    return 0;
}

static int h5_load_inproc(const char *path, ab_pset *set, ab_env *env, char *err, size_t errlen)
{
    int rc = -1;
    unsigned char *buf = NULL;
    struct stat sb;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ab_fail(err, errlen, -1, "cannot open %s: %s", path, strerror(errno));
    if (fstat(fd, &sb) < 0) {
        ab_fail(err, errlen, -1, "cannot open %s: %s", path, strerror(errno));
        goto cleanup;
    }
    if (S_ISDIR(sb.st_mode)) {
        ab_fail(err, errlen, -1, "cannot read %s: %s", path, strerror(EISDIR));
        goto cleanup;
    }
    if (sb.st_size <= 0) {
        ab_fail(err, errlen, -1, "%s is not an HDF5 file (it is empty)", path);
        goto cleanup;
    }
    if ((unsigned long long)sb.st_size > SIZE_MAX / 2 || !(buf = malloc((size_t)sb.st_size))) {
        ab_fail(err, errlen, -1, "cannot read %s: out of memory (%lld bytes)", path, (long long)sb.st_size);
        goto cleanup;
    }
    ssize_t got = ab_read_full(fd, buf, (size_t)sb.st_size);
    if (got < 0) {
        ab_fail(err, errlen, -1, "cannot read %s: %s", path, strerror(errno));
        goto cleanup;
    }
    if (!has_h5_signature(buf, (size_t)got)) {
        ab_fail(err, errlen, -1, "%s is not an HDF5 file", path);
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

static void h5_load_child(void *arg, int fd)
{
    const char *path = arg;
    ab_pset s = { 0 };
    ab_env e = { 0 };
    load_hdr h;
    memset(&h, 0, sizeof h);
    h.rc = h5_load_inproc(path, &s, &e, h.msg, sizeof h.msg);
    h.n = h.rc == 0 ? s.n : 0;
    h.nenv = h.rc == 0 ? e.n : 0;
    if (ab_write_all(fd, &h, sizeof h) < 0) _exit(3);
    for (size_t i = 0; i < h.n; i++)
        if (ab_write_all(fd, &s.v[i], sizeof s.v[i]) < 0) _exit(3);
    for (int i = 0; i < h.nenv; i++) {
        const char *v = e.value[i] ? e.value[i] : "";
        uint32_t l = (uint32_t)strlen(v);
        char name[sizeof e.name[0]] = { 0 }; /* no stray stack bytes down the pipe */
        strncpy(name, e.name[i], sizeof name - 1);
        if (ab_write_all(fd, name, sizeof name) < 0 || ab_write_all(fd, &l, sizeof l) < 0 ||
            ab_write_all(fd, v, l) < 0)
            _exit(3);
    }
    _exit(0);
}

static int h5_load(const char *path, ab_pset *set, ab_env *env, char *err, size_t errlen)
{
    struct stat sb;
    double limit = 60.0 + (stat(path, &sb) == 0 ? (double)sb.st_size / 1048576.0 : 0);
    const char *lim_env = getenv("AB_H5_READ_TIMEOUT_S"); /* tests: a shorter limit */
    if (lim_env && atof(lim_env) > 0) limit = atof(lim_env);
    const ab_isolate_opts o = { limit, NULL, AB_ISO_PDEATHSIG }; /* never outlive the reader */
    ab_child ch;
    if (ab_child_start(&ch, h5_load_child, (void *)path, &o) < 0)
        return ab_fail(err, errlen, -1, "cannot read %s: %s: %s", path, ch.failed, strerror(errno));
    int rc = -1, proto = 0;
    load_hdr h;
    ab_point *p = NULL;
    char *val = NULL;
#define READ(buf, len) (ab_child_read(&ch, (buf), (len)) == 1)
    if (!READ(&h, sizeof h)) goto done;
    h.msg[sizeof h.msg - 1] = '\0';
    if (h.rc != 0) {
        proto = 1;
        ab_fail(err, errlen, -1, "%s", h.msg);
        goto done;
    }
    if (h.n > SIZE_MAX / sizeof(ab_point) / 2 || h.nenv < 0 || h.nenv > AB_ENV_MAX ||
        ab_pset_reserve(set, (size_t)h.n) < 0 || !(p = malloc(sizeof *p))) {
        proto = 1;
        ab_fail(err, errlen, -1, "cannot read %s: out of memory for %llu points", path,
                (unsigned long long)h.n);
        goto done;
    }
    for (uint64_t i = 0; i < h.n; i++) {
        if (!READ(p, sizeof *p)) goto done;
        point_sanitize(p);
        ab_pset_put(set, p); /* cannot fail after the reserve */
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
    int ws = 0;
    ab_child_reap(&ch, &ws, NULL); /* kills the child if it ran out of time */
    if (rc < 0 && !proto) {
        if (ch.ended == AB_CHILD_TIMEOUT)
            ab_fail(err, errlen, -1,
                    "%s is a damaged HDF5 file (libhdf5 did not finish reading it within %.0f s)", path,
                    limit);
        else if (WIFSIGNALED(ws))
            ab_fail(err, errlen, -1, "%s is a damaged HDF5 file (libhdf5 crashed reading it: %s)", path,
                    strsignal(WTERMSIG(ws)));
        else
            ab_fail(err, errlen, -1, "%s is a damaged HDF5 file (its reader stopped early, status %d)", path,
                    WIFEXITED(ws) ? WEXITSTATUS(ws) : -1);
    }
    if (rc < 0) ab_env_free(env);
    return rc;
}

/* A journal record's point: made safe to use, kept unless its key is bad. */
static int journal_take(void *set, ab_point *p)
{
    point_sanitize(p);
    if (!key_ok(p->key)) return 0;
    return ab_pset_put(set, p);
}

/* OUT plus its leftover journal (journal wins by key). missing_ok: neither
 * existing is an empty result instead of an error. The journal is read
 * first, so a reader racing a writer's final rewrite misses nothing. */
static int results_load(const char *path, const char *jpath, ab_pset *set, ab_env *env, int missing_ok,
                        char *err, size_t errlen)
{
    ab_pset jset = { 0 };
    int jfound = 0, rc = -1;
    struct stat sb;
    if (ab_journal_load(jpath, journal_take, &jset, &jfound, err, errlen) < 0) goto cleanup;
    if (stat(path, &sb) == 0 || errno != ENOENT || (!jfound && !missing_ok)) {
        if (h5_load(path, set, env, err, errlen) < 0) goto cleanup;
    }
    if (ab_pset_reserve(set, jset.n) < 0) {
        ab_fail(err, errlen, -1, "cannot read %s: out of memory", jpath);
        goto cleanup;
    }
    for (size_t i = 0; i < jset.n; i++) ab_pset_put(set, &jset.v[i]); /* cannot fail after the reserve */
    rc = 0;
cleanup:
    ab_pset_free(&jset);
    return rc;
}

int ab_results_read(const char *path, ab_point **pts, size_t *n, ab_env *env, char *err, size_t errlen)
{
    ab_pset set = { 0 };
    ab_env e = { 0 };
    int rc = -1;
    char *jpath = NULL;
    if (pts) *pts = NULL;
    if (n) *n = 0;
    if (!path || !*path || !pts || !n) return ab_fail(err, errlen, -1, "ab_results_read: invalid arguments");
    if (!(jpath = cat_path(path, ".journal")))
        return ab_fail(err, errlen, -1, "cannot read %s: out of memory", path);
    if (results_load(path, jpath, &set, &e, 0, err, errlen) < 0) goto cleanup;
    if (env)
        for (int i = 0; i < e.n; i++) ab_env_set(env, e.name[i], e.value[i]);
    *n = set.n;
    *pts = set.v; /* ownership passes to the caller: free(*pts) */
    set.v = NULL;
    rc = 0;
cleanup:
    ab_env_free(&e);
    ab_pset_free(&set);
    free(jpath);
    return rc;
}

/* ---- the store ---------------------------------------------------------- */

struct ab_store {
    char *path, *tmp, *jpath, *jtmp;
    ab_env env;
    ab_pset set;
    ab_journal j;      /* OUT.journal, open for appending; fd -1 after close */
    pid_t owner;       /* the process that opened the store */
    double last_write; /* monotonic seconds of the last rewrite */
    double interval;   /* seconds between rewrites while appending */
    int dirty;         /* points not yet in OUT */
};

static void store_free(ab_store *st)
{
    if (!st) return;
    ab_journal_free(&st->j);
    ab_env_free(&st->env);
    ab_pset_free(&st->set);
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
    if (build_image(&st->env, &st->set, &img, &len, st->path, NULL, 0, err, errlen) < 0) return -1;
    int rc = ab_write_atomic(st->path, st->tmp, img, len, err, errlen);
    free(img);
    if (rc == 0) {
        st->last_write = now_s();
        st->dirty = 0;
        /* at most once a second, and never more than ~10% of the time: a
         * huge file is rewritten less often (the journal covers the gap) */
        st->interval = 10.0 * (st->last_write - t0);
        if (st->interval < AB_REWRITE_INTERVAL_S) st->interval = AB_REWRITE_INTERVAL_S;
        /* OUT (renamed and its directory synced) now holds every journaled
         * point: restart the journal after its header, so it stays small. On
         * failure it just keeps growing (duplicates of OUT are harmless). */
        ab_journal_restart(&st->j);
    }
    return rc;
}

int ab_store_open(const char *path, const ab_env *env, int resume, ab_store **out, char *err, size_t errlen)
{
    ab_store *st = NULL;
    if (out) *out = NULL;
    if (!path || !*path || !out) return ab_fail(err, errlen, -1, "ab_store_open: invalid arguments");
    if (!(st = calloc(1, sizeof *st))) return ab_fail(err, errlen, -1, "cannot open %s: out of memory", path);
    st->j.fd = -1;
    st->owner = getpid();
    if (!(st->path = cat_path(path, "")) || !(st->tmp = cat_path(path, ".tmp")) ||
        !(st->jpath = cat_path(path, ".journal")) || !(st->jtmp = cat_path(path, ".journal.tmp")) ||
        ab_journal_init(&st->j) < 0) {
        ab_fail(err, errlen, -1, "cannot open %s: out of memory", path);
        goto fail_free;
    }
    for (int i = 0; env && i < env->n && i < AB_ENV_MAX; i++)
        ab_env_set(&st->env, env->name[i], env->value[i]);

    /* 1. load what is there (nothing is touched if this fails) */
    if (resume) {
        ab_env old = { 0 };
        int rc = results_load(st->path, st->jpath, &st->set, &old, 1, err, errlen);
        ab_env_free(&old); /* the new run's env replaces the old one */
        if (rc < 0) goto fail_free;
    }
    /* 2. a fresh journal under a temporary name (probes the directory) */
    int fd = ab_journal_create(st->jtmp, err, errlen);
    if (fd < 0) goto fail_free;
    /* 3. OUT with every loaded point (some may have come only from the old
     *    journal), or empty: from here on a file exists */
    if (store_rewrite(st, err, errlen) < 0) {
        close(fd);
        unlink(st->jtmp);
        goto fail_free;
    }
    /* 4. the fresh journal replaces the old one, whose points OUT now holds */
    if (rename(st->jtmp, st->jpath) < 0 || ab_fsync_dir(st->jpath) < 0) {
        int e = errno;
        close(fd);
        unlink(st->jtmp);
        ab_fail(err, errlen, -1, "cannot create %s: %s", st->jpath, strerror(e));
        goto fail_free;
    }
    ab_journal_attach(&st->j, fd);
    *out = st;
    return 0;
fail_free:
    store_free(st);
    return -1;
}

const ab_point *ab_store_get(const ab_store *st, const char *key)
{
    if (!st || !key) return NULL;
    size_t i = ab_pset_find(&st->set, key);
    return i == SIZE_MAX ? NULL : &st->set.v[i];
}

int ab_store_has(const ab_store *st, const char *key)
{
    const ab_point *p = ab_store_get(st, key);
    return p && ab_status_is_final(p->status);
}

size_t ab_store_count(const ab_store *st) { return st ? st->set.n : 0; }

int ab_store_append(ab_store *st, const ab_point *p, char *err, size_t errlen)
{
    if (!st || !p) return ab_fail(err, errlen, -1, "ab_store_append: invalid arguments");
    if (getpid() != st->owner)
        return ab_fail(err, errlen, -1, "results store %s used from a forked child (refused)", st->path);
    if (st->j.fd < 0 || st->j.broken)
        return ab_fail(err, errlen, -1, "journal %s is unusable after an earlier write error", st->jpath);
    if (!key_ok(p->key))
        return ab_fail(err, errlen, -1, "cannot store a point with an invalid key \"%.*s\"",
                       (int)sizeof p->key, p->key);
    /* room first: once journaled, the point must also make it into memory */
    if (ab_pset_reserve(&st->set, 1) < 0)
        return ab_fail(err, errlen, -1, "cannot store a point in %s: out of memory", st->path);

    ab_point *q = ab_journal_slot(&st->j);
    memcpy(q, p, sizeof *q);
    point_sanitize(q);
    if (ab_journal_append(&st->j, st->jpath, err, errlen) < 0) return -1;
    ab_pset_put(&st->set, q); /* cannot fail after the reserve */
    st->dirty = 1;

    if (now_s() - st->last_write >= st->interval)
        return store_rewrite(st, err, errlen); /* the point is safe in the journal
                                                 * even if this fails */
    return 0;
}

int ab_store_close(ab_store *st, char *err, size_t errlen)
{
    int rc = 0;
    if (!st) return 0;
    if (getpid() != st->owner) {
        store_free(st);
        return ab_fail(err, errlen, -1, "results store closed from a forked child (nothing written)");
    }
    if (st->dirty) rc = store_rewrite(st, err, errlen);
    if (rc == 0) {
        /* OUT holds everything: the journal has done its job */
        ab_journal_close(&st->j);
        if (unlink(st->jpath) < 0 && errno != ENOENT)
            rc = ab_fail(err, errlen, -1, "cannot remove %s: %s", st->jpath, strerror(errno));
        else
            ab_fsync_dir(st->jpath);
    }
    store_free(st);
    return rc;
}

void ab_store_abandon(ab_store *st) { store_free(st); }

int ab_results_write(const char *path, const ab_point *pts, size_t n, const ab_env *env, const ab_env *shards,
                     int nshards, char *err, size_t errlen)
{
    ab_pset set = { 0 };
    void *img = NULL;
    size_t len = 0;
    char *tmp = NULL, *jpath = NULL;
    int rc = -1;
    if (!path || !*path || (n && !pts))
        return ab_fail(err, errlen, -1, "ab_results_write: invalid arguments");
    if (!(tmp = cat_path(path, ".tmp")) || !(jpath = cat_path(path, ".journal")) ||
        ab_pset_reserve(&set, n) < 0) {
        ab_fail(err, errlen, -1, "cannot write %s: out of memory", path);
        goto cleanup;
    }
    for (size_t i = 0; i < n; i++) {
        if (!key_ok(pts[i].key)) {
            ab_fail(err, errlen, -1, "cannot write %s: point %zu has an invalid key", path, i);
            goto cleanup;
        }
        ab_pset_put(&set, &pts[i]); /* cannot fail after the reserve */
        point_sanitize(&set.v[ab_pset_find(&set, pts[i].key)]);
    }
    if (build_image(env, &set, &img, &len, path, shards, nshards, err, errlen) < 0 ||
        ab_write_atomic(path, tmp, img, len, err, errlen) < 0)
        goto cleanup;
    /* a journal left by an earlier writer of PATH would be merged into it by readers */
    if (unlink(jpath) == 0) ab_fsync_dir(jpath);
    rc = 0;
cleanup:
    free(img);
    free(tmp);
    free(jpath);
    ab_pset_free(&set);
    return rc;
}
