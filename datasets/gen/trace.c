/* trace.c — HDF5 reader of attnbench trace files (docs/traces.md), used by the
 * `trace` task: real Q, K, V of one layer (e.g. captured from a model with
 * scripts/make_trace.py), validated and loaded as float32.
 *
 * HDF5's own error stack printing is switched off around every call and
 * restored afterwards; each failure becomes one line in err naming the file
 * and dataset.
 */
#include <errno.h>
#include <hdf5.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "datasets/gen/trace.h"

static int fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return AB_EINVAL;
}

float ab_half_to_float(unsigned short h)
{
    const unsigned sign = (h >> 15) & 1u, ex = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    float x;
    if (ex == 0)
        x = ldexpf((float)man, -24); /* zero or subnormal */
    else if (ex == 31)
        x = man ? NAN : INFINITY;
    else
        x = ldexpf((float)(man | 0x400u), (int)ex - 25);
    return sign ? -x : x;
}

/* Read a string attribute (fixed or variable length) into buf; 0 on success. */
static int read_str_attr(hid_t obj, const char *name, char *buf, size_t len)
{
    buf[0] = 0;
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0) return -1;
    hid_t t = H5Aget_type(a);
    int rc = -1;
    if (t >= 0 && H5Tget_class(t) == H5T_STRING) {
        if (H5Tis_variable_str(t) > 0) {
            char *s = NULL;
            hid_t mt = H5Tcopy(H5T_C_S1);
            H5Tset_size(mt, H5T_VARIABLE);
            H5Tset_cset(mt, H5Tget_cset(t)); /* HDF5 does not convert ASCII <-> UTF-8 */
            if (H5Aread(a, mt, &s) >= 0 && s) {
                snprintf(buf, len, "%s", s);
                rc = 0;
            }
            if (s) {
                hid_t sp = H5Aget_space(a);
                H5Dvlen_reclaim(mt, sp, H5P_DEFAULT, &s);
                H5Sclose(sp);
            }
            H5Tclose(mt);
        } else {
            size_t sz = H5Tget_size(t);
            char *tmp = calloc(sz + 1, 1); /* [sz + 1] */
            hid_t mt = H5Tcopy(H5T_C_S1);
            H5Tset_size(mt, sz);
            H5Tset_cset(mt, H5Tget_cset(t));
            if (tmp && H5Aread(a, mt, tmp) >= 0) {
                snprintf(buf, len, "%s", tmp);
                rc = 0;
            }
            H5Tclose(mt);
            free(tmp);
        }
    }
    if (t >= 0) H5Tclose(t);
    H5Aclose(a);
    return rc;
}

/* Read a numeric scalar attribute as double; 0 on success, -1 if absent. */
static int read_num_attr(hid_t obj, const char *name, double *out)
{
    if (H5Aexists(obj, name) <= 0) return -1;
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0) return -1;
    hid_t sp = H5Aget_space(a);
    int rc = -1;
    if (sp >= 0 && H5Sget_simple_extent_npoints(sp) == 1 && H5Aread(a, H5T_NATIVE_DOUBLE, out) >= 0) rc = 0;
    if (sp >= 0) H5Sclose(sp);
    H5Aclose(a);
    return rc;
}

/* One of q, k, v: open, check dtype and rank; dims[3] out. */
static int probe_ds(hid_t g, const char *path, int layer, const char *name, hsize_t dims[3], int *elem,
                    char *err, size_t errlen)
{
    if (H5Lexists(g, name, H5P_DEFAULT) <= 0)
        return fail(err, errlen, "trace %s: missing dataset /layer_%d/%s", path, layer, name);
    hid_t ds = H5Dopen2(g, name, H5P_DEFAULT);
    if (ds < 0) return fail(err, errlen, "trace %s: /layer_%d/%s is not a dataset", path, layer, name);
    hid_t t = H5Dget_type(ds), sp = H5Dget_space(ds);
    int rc = AB_OK;
    if (t < 0 || sp < 0) {
        rc = fail(err, errlen, "trace %s: /layer_%d/%s: unreadable type or shape", path, layer, name);
    } else if (H5Tget_class(t) == H5T_INTEGER) {
        /* bfloat16: raw 16-bit patterns, tagged by the dataset's dtype attribute */
        char tag[32];
        if (H5Tget_size(t) != 2 || read_str_attr(ds, "dtype", tag, sizeof tag) || strcmp(tag, "bfloat16"))
            rc = fail(err, errlen,
                      "trace %s: /layer_%d/%s: integer dataset without dtype = \"bfloat16\" "
                      "(want float32, float16 or bfloat16 bits)",
                      path, layer, name);
        *elem = AB_TRACE_BF16;
    } else if (H5Tget_class(t) != H5T_FLOAT) {
        rc = fail(err, errlen,
                  "trace %s: /layer_%d/%s: dtype is not floating point "
                  "(want float32, float16 or bfloat16)",
                  path, layer, name);
    } else {
        size_t sz = H5Tget_size(t);
        size_t spos, epos, esize, mpos, msize;
        if (sz == 2) {
            if (H5Tget_fields(t, &spos, &epos, &esize, &mpos, &msize) < 0 || spos != 15 || epos != 10 ||
                esize != 5 || mpos != 0 || msize != 10 || H5Tget_ebias(t) != 15)
                rc = fail(err, errlen,
                          "trace %s: /layer_%d/%s: 16-bit float is not IEEE "
                          "binary16",
                          path, layer, name);
        } else if (sz != 4) {
            rc = fail(err, errlen,
                      "trace %s: /layer_%d/%s: dtype float%zu not supported "
                      "(want float32 or float16)",
                      path, layer, name, 8 * sz);
        }
        *elem = (int)sz;
    }
    if (rc == AB_OK) {
        int rank = H5Sget_simple_extent_ndims(sp);
        if (rank != 3) {
            rc = fail(err, errlen,
                      "trace %s: /layer_%d/%s: rank %d, want 3 "
                      "([heads, N, d])",
                      path, layer, name, rank);
        } else {
            H5Sget_simple_extent_dims(sp, dims, NULL);
            if (dims[0] == 0 || dims[1] == 0 || dims[2] == 0 || dims[0] > 1u << 20 || dims[1] > 1u << 30 ||
                dims[2] > 1u << 16)
                rc = fail(err, errlen, "trace %s: /layer_%d/%s: bad shape [%llu, %llu, %llu]", path, layer,
                          name, (unsigned long long)dims[0], (unsigned long long)dims[1],
                          (unsigned long long)dims[2]);
        }
    }
    if (t >= 0) H5Tclose(t);
    if (sp >= 0) H5Sclose(sp);
    H5Dclose(ds);
    return rc;
}

/* Open the file and validate its root (format, version); AB_OK with *fo
 * open and *version set, else closed. */
static int open_root(const char *path, hid_t *fo, double *version, char *err, size_t errlen)
{
    *fo = -1;
    if (!path || !path[0]) return fail(err, errlen, "trace: no file given (set file = PATH in [task.trace])");
    if (access(path, R_OK) != 0) return fail(err, errlen, "trace %s: cannot read: %s", path, strerror(errno));
    if (H5Fis_hdf5(path) <= 0) return fail(err, errlen, "trace %s: not an HDF5 file", path);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return fail(err, errlen, "trace %s: HDF5 cannot open it", path);
    char fmt[64];
    if (H5Aexists(f, "format") <= 0 || read_str_attr(f, "format", fmt, sizeof fmt) ||
        strcmp(fmt, "attnbench-trace")) {
        H5Fclose(f);
        return fail(err, errlen,
                    "trace %s: not an attnbench trace (root attribute "
                    "format = \"attnbench-trace\" missing)",
                    path);
    }
    double ver = 1;
    if (!read_num_attr(f, "version", &ver) && ver != 1 && ver != 2) {
        H5Fclose(f);
        return fail(err, errlen, "trace %s: format version %g, this reader knows 1 and 2", path, ver);
    }
    *fo = f;
    *version = ver;
    return AB_OK;
}

/* Open the file (root validated by open_root) and the layer group; AB_OK
 * with *fo, *go open, else closed. */
static int open_layer(const char *path, int layer, hid_t *fo, hid_t *go, char *err, size_t errlen)
{
    *go = -1;
    hid_t f;
    double ver;
    int rc = open_root(path, &f, &ver, err, errlen);
    *fo = -1;
    if (rc != AB_OK) return rc;
    char gname[32];
    snprintf(gname, sizeof gname, "layer_%d", layer);
    if (H5Lexists(f, gname, H5P_DEFAULT) <= 0) {
        H5Fclose(f);
        return fail(err, errlen, "trace %s: missing group /%s (set layer = ... in [task.trace])", path,
                    gname);
    }
    hid_t g = H5Gopen2(f, gname, H5P_DEFAULT);
    if (g < 0) {
        H5Fclose(f);
        return fail(err, errlen, "trace %s: /%s is not a group", path, gname);
    }
    *fo = f;
    *go = g;
    return AB_OK;
}

/* The query-head -> K/V-head map of a layer: /layer_L/kv_map (int [H], each
 * in [0, Hkv)) when present, else head h reads K/V head h / (H / Hkv). */
static int read_kv_map(hid_t g, const char *path, int layer, int H, int Hkv, int *map, char *err,
                       size_t errlen)
{
    if (H5Lexists(g, "kv_map", H5P_DEFAULT) <= 0) {
        for (int h = 0; h < H; h++) map[h] = h / (H / Hkv);
        return AB_OK;
    }
    hid_t ds = H5Dopen2(g, "kv_map", H5P_DEFAULT);
    if (ds < 0) return fail(err, errlen, "trace %s: /layer_%d/kv_map is not a dataset", path, layer);
    hid_t sp = H5Dget_space(ds), t = H5Dget_type(ds);
    hsize_t n = 0;
    int rc = AB_OK;
    if (sp < 0 || t < 0 || H5Tget_class(t) != H5T_INTEGER || H5Sget_simple_extent_ndims(sp) != 1)
        rc = fail(err, errlen, "trace %s: /layer_%d/kv_map: want a 1-D integer dataset [%d]", path, layer, H);
    else if (H5Sget_simple_extent_dims(sp, &n, NULL), n != (hsize_t)H)
        rc = fail(err, errlen, "trace %s: /layer_%d/kv_map has %llu entries, want one per query head (%d)",
                  path, layer, (unsigned long long)n, H);
    else if (H5Dread(ds, H5T_NATIVE_INT, H5S_ALL, H5S_ALL, H5P_DEFAULT, map) < 0)
        rc = fail(err, errlen, "trace %s: reading /layer_%d/kv_map failed", path, layer);
    for (int h = 0; rc == AB_OK && h < H; h++)
        if (map[h] < 0 || map[h] >= Hkv)
            rc = fail(err, errlen, "trace %s: /layer_%d/kv_map[%d] = %d is not a K/V head (there are %d)",
                      path, layer, h, map[h], Hkv);
    if (t >= 0) H5Tclose(t);
    if (sp >= 0) H5Sclose(sp);
    H5Dclose(ds);
    return rc;
}

/* Structure and request checks with an open group. */
static int check_open(hid_t g, const char *path, int layer, const ab_shape *s, ab_trace_info *info, char *err,
                      size_t errlen)
{
    static const char *const names[3] = { "q", "k", "v" };
    hsize_t dims[3][3];
    int elem[3];
    for (int i = 0; i < 3; i++) {
        int rc = probe_ds(g, path, layer, names[i], dims[i], &elem[i], err, errlen);
        if (rc != AB_OK) return rc;
    }
    const unsigned long long H = dims[0][0], N = dims[0][1], d = dims[0][2];
    for (int i = 1; i < 3; i++) {
        if (dims[i][1] != N || dims[i][2] != d)
            return fail(err, errlen,
                        "trace %s: /layer_%d/%s has shape [%llu, %llu, %llu], "
                        "want [H_kv, %llu, %llu] like q",
                        path, layer, names[i], (unsigned long long)dims[i][0], (unsigned long long)dims[i][1],
                        (unsigned long long)dims[i][2], N, d);
    }
    if (dims[1][0] != dims[2][0])
        return fail(err, errlen, "trace %s: /layer_%d/k has %llu heads but /layer_%d/v has %llu", path, layer,
                    (unsigned long long)dims[1][0], layer, (unsigned long long)dims[2][0]);
    const unsigned long long Hkv = dims[1][0];
    const int has_map = H5Lexists(g, "kv_map", H5P_DEFAULT) > 0;
    if (!has_map && H % Hkv)
        return fail(err, errlen,
                    "trace %s: /layer_%d/k has %llu heads, which does not divide "
                    "the %llu query heads of /layer_%d/q (and there is no /layer_%d/kv_map)",
                    path, layer, Hkv, H, layer, layer);
    if (has_map) {
        int *map = malloc(sizeof(int) * (size_t)H); /* [H] */
        if (!map) return fail(err, errlen, "trace %s: out of memory", path);
        int rc = read_kv_map(g, path, layer, (int)H, (int)Hkv, map, err, errlen);
        free(map);
        if (rc != AB_OK) return rc;
    }
    if (elem[0] != elem[1] || elem[0] != elem[2])
        return fail(err, errlen, "trace %s: /layer_%d: q, k, v have different dtypes", path, layer);
    if (s) {
        if ((unsigned long long)s->seq_len > N)
            return fail(err, errlen,
                        "trace %s: /layer_%d/q has N = %llu tokens, fewer than "
                        "seq_len = %d",
                        path, layer, N, s->seq_len);
        if ((unsigned long long)s->heads > H)
            return fail(err, errlen, "trace %s: /layer_%d/q has %llu heads, fewer than heads = %d", path,
                        layer, H, s->heads);
        if ((unsigned long long)s->head_dim != d)
            return fail(err, errlen,
                        "trace %s: /layer_%d/q has head dim d = %llu, but "
                        "head_dim = %d",
                        path, layer, d, s->head_dim);
    }
    if (info) {
        info->heads = (int)H;
        info->kv_heads = (int)Hkv;
        info->n = (int)N;
        info->d = (int)d;
        info->elem_bytes = elem[0] == AB_TRACE_BF16 ? 2 : elem[0];
        info->bf16 = elem[0] == AB_TRACE_BF16;
        info->has_kv_map = has_map;
        double x;
        info->causal = read_num_attr(g, "causal", &x) ? -1 : (int)x;
        info->rope_applied = read_num_attr(g, "rope_applied", &x) ? -1 : (int)x;
        info->scale = read_num_attr(g, "scale", &x) ? 1.0 / sqrt((double)d) : x;
        if (!(info->scale > 0.0) || !isfinite(info->scale))
            return fail(err, errlen,
                        "trace %s: /layer_%d: scale attribute %g is not a positive "
                        "number",
                        path, layer, info->scale);
    }
    return AB_OK;
}

int ab_trace_check(const char *path, int layer, const ab_shape *s, ab_trace_info *info, char *err,
                   size_t errlen)
{
    H5E_auto2_t efn;
    void *edata;
    H5Eget_auto2(H5E_DEFAULT, &efn, &edata);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t f, g;
    ab_trace_info tmp;
    int rc = open_layer(path, layer, &f, &g, err, errlen);
    if (rc == AB_OK) {
        rc = check_open(g, path, layer, s, info ? info : &tmp, err, errlen);
        H5Gclose(g);
        H5Fclose(f);
    }
    H5Eset_auto2(H5E_DEFAULT, efn, edata);
    return rc;
}

/* Read [0:nh, 0:n, 0:d] of dataset `name` as float32 into out, checking every
 * value is finite. */
static int read_slice(hid_t g, const char *path, int layer, const char *name, int elem, int nh, int n, int d,
                      float *out /* (nh, n, d) */, char *err, size_t errlen)
{
    hid_t ds = H5Dopen2(g, name, H5P_DEFAULT);
    if (ds < 0) return fail(err, errlen, "trace %s: cannot open /layer_%d/%s", path, layer, name);
    hid_t fs = H5Dget_space(ds);
    hsize_t start[3] = { 0, 0, 0 }, count[3] = { (hsize_t)nh, (hsize_t)n, (hsize_t)d };
    hid_t ms = H5Screate_simple(3, count, NULL);
    const size_t cnt = (size_t)nh * n * d;
    int rc = AB_OK;
    H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL);
    if (elem == 4) {
        if (H5Dread(ds, H5T_NATIVE_FLOAT, ms, fs, H5P_DEFAULT, out) < 0)
            rc = fail(err, errlen, "trace %s: reading /layer_%d/%s failed", path, layer, name);
    } else {
        /* 16-bit: read the raw patterns in native byte order, convert here
         * (float16: IEEE binary16; bfloat16: the top half of a float32) */
        unsigned short *hb = malloc(cnt * sizeof *hb); /* [cnt] */
        hid_t ft = H5Dget_type(ds);
        hid_t mt = elem == AB_TRACE_BF16 ? H5Tcopy(H5T_NATIVE_USHORT) : H5Tcopy(ft);
        H5Tset_order(mt, H5Tget_order(H5T_NATIVE_USHORT));
        if (!hb) {
            rc = AB_ENOMEM;
            fail(err, errlen, "trace %s: out of memory reading /layer_%d/%s", path, layer, name);
        } else if (H5Dread(ds, mt, ms, fs, H5P_DEFAULT, hb) < 0) {
            rc = fail(err, errlen, "trace %s: reading /layer_%d/%s failed", path, layer, name);
        } else if (elem == AB_TRACE_BF16) {
            for (size_t i = 0; i < cnt; i++) {
                const uint32_t u = (uint32_t)hb[i] << 16;
                memcpy(&out[i], &u, sizeof u);
            }
        } else {
            for (size_t i = 0; i < cnt; i++) out[i] = ab_half_to_float(hb[i]);
        }
        H5Tclose(mt);
        H5Tclose(ft);
        free(hb);
    }
    H5Sclose(ms);
    H5Sclose(fs);
    H5Dclose(ds);
    if (rc != AB_OK) return rc;
    for (size_t i = 0; i < cnt; i++) {
        if (!isfinite(out[i])) {
            const size_t m = i % d, t = (i / d) % n, h = i / ((size_t)d * n);
            return fail(err, errlen, "trace %s: /layer_%d/%s[%zu, %zu, %zu] is %s", path, layer, name, h, t,
                        m, isnan(out[i]) ? "NaN" : "Inf");
        }
    }
    return AB_OK;
}

int ab_trace_load(const char *path, int layer, const ab_shape *s, float *q, float *k, float *v, char *err,
                  size_t errlen)
{
    if (!s || !q || !k || !v || s->heads <= 0 || s->seq_len <= 0 || s->head_dim <= 0)
        return fail(err, errlen, "trace: bad arguments");
    H5E_auto2_t efn;
    void *edata;
    H5Eget_auto2(H5E_DEFAULT, &efn, &edata);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t f, g;
    ab_trace_info info;
    int rc = open_layer(path, layer, &f, &g, err, errlen);
    if (rc != AB_OK) {
        H5Eset_auto2(H5E_DEFAULT, efn, edata);
        return rc;
    }
    rc = check_open(g, path, layer, s, &info, err, errlen);
    const int H = s->heads, N = s->seq_len, d = s->head_dim;
    float *kt = NULL, *vt = NULL;
    int *map = NULL;
    const int ecode = info.bf16 ? AB_TRACE_BF16 : info.elem_bytes;
    if (rc == AB_OK) rc = read_slice(g, path, layer, "q", ecode, H, N, d, q, err, errlen);
    if (rc == AB_OK) {
        map = malloc(sizeof(int) * (size_t)info.heads); /* [heads in the file] */
        rc = map ? read_kv_map(g, path, layer, info.heads, info.kv_heads, map, err, errlen)
                 : fail(err, errlen, "trace %s: out of memory", path);
    }
    if (rc == AB_OK) {
        int hk = 0; /* kv heads the first H heads use: [0, hk) */
        for (int h = 0; h < H; h++)
            if (map[h] + 1 > hk) hk = map[h] + 1;
        const size_t per = (size_t)N * d;
        kt = malloc((size_t)hk * per * sizeof(float)); /* (hk, N, d) */
        vt = malloc((size_t)hk * per * sizeof(float)); /* (hk, N, d) */
        if (!kt || !vt) {
            rc = AB_ENOMEM;
            fail(err, errlen, "trace %s: out of memory", path);
        }
        if (rc == AB_OK) rc = read_slice(g, path, layer, "k", ecode, hk, N, d, kt, err, errlen);
        if (rc == AB_OK) rc = read_slice(g, path, layer, "v", ecode, hk, N, d, vt, err, errlen);
        if (rc == AB_OK) {
            for (int h = 0; h < H; h++) {
                memcpy(k + (size_t)h * per, kt + (size_t)map[h] * per, per * sizeof(float));
                memcpy(v + (size_t)h * per, vt + (size_t)map[h] * per, per * sizeof(float));
            }
            /* the model's logit scale, with the harness's 1/sqrt(d) applied on top */
            const double f_scale = info.scale / (double)s->scale;
            if (fabs(f_scale - 1.0) > 1e-6)
                for (size_t i = 0; i < (size_t)H * per; i++) q[i] = (float)((double)q[i] * f_scale);
        }
    }
    free(kt);
    free(vt);
    free(map);
    H5Gclose(g);
    H5Fclose(f);
    H5Eset_auto2(H5E_DEFAULT, efn, edata);
    return rc;
}

static herr_t collect_layer(hid_t g, const char *name, const H5L_info_t *li, void *op)
{
    (void)g;
    (void)li;
    ab_trace_meta *m = op;
    int L, used = 0;
    if (sscanf(name, "layer_%d%n", &L, &used) == 1 && name[used] == 0 && L >= 0 &&
        m->n_layers < AB_TRACE_MAX_LAYERS)
        m->layers[m->n_layers++] = L;
    return 0;
}

static int cmp_int(const void *a, const void *b)
{
    return (*(const int *)a > *(const int *)b) - (*(const int *)a < *(const int *)b);
}

static int int_attr(hid_t f, const char *name)
{
    double x;
    return read_num_attr(f, name, &x) || !(x >= 0 && x < 2147483647.0) ? -1 : (int)x;
}

int ab_trace_meta_read(const char *path, ab_trace_meta *m, char *err, size_t errlen)
{
    memset(m, 0, sizeof *m);
    H5E_auto2_t efn;
    void *edata;
    H5Eget_auto2(H5E_DEFAULT, &efn, &edata);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t f = -1, g = -1;
    double ver = 1;
    int rc = open_root(path, &f, &ver, err, errlen);
    if (rc == AB_OK) {
        m->version = (int)ver;
        read_str_attr(f, "source", m->source, sizeof m->source);
        read_str_attr(f, "model_type", m->model_type, sizeof m->model_type);
        read_str_attr(f, "dtype", m->dtype, sizeof m->dtype);
        read_str_attr(f, "passkey", m->passkey, sizeof m->passkey);
        read_str_attr(f, "config_sha256", m->config_sha256, sizeof m->config_sha256);
        read_str_attr(f, "prompt_sha256", m->prompt_sha256, sizeof m->prompt_sha256);
        m->synthetic = int_attr(f, "synthetic");
        m->n_tokens = int_attr(f, "n_tokens");
        if (m->n_tokens < 0 && H5Lexists(f, "tokens", H5P_DEFAULT) > 0 &&
            (g = H5Dopen2(f, "tokens", H5P_DEFAULT)) >= 0) {
            hid_t sp = H5Dget_space(g);
            hsize_t n = 0;
            if (sp >= 0 && H5Sget_simple_extent_ndims(sp) == 1) {
                H5Sget_simple_extent_dims(sp, &n, NULL);
                m->n_tokens = (long long)n;
            }
            if (sp >= 0) H5Sclose(sp);
            H5Dclose(g);
        }
        m->needle_start = int_attr(f, "needle_start");
        m->needle_end = int_attr(f, "needle_end");
        m->question_start = int_attr(f, "question_start");
        m->question_end = int_attr(f, "question_end");
        const int any =
            m->needle_start >= 0 || m->needle_end >= 0 || m->question_start >= 0 || m->question_end >= 0;
        if (any &&
            !(m->needle_start >= 0 && m->needle_start < m->needle_end && m->needle_end <= m->question_start &&
              m->question_start < m->question_end && (m->n_tokens < 0 || m->question_end <= m->n_tokens)))
            rc = fail(err, errlen,
                      "trace %s: answer span attributes inconsistent: needle [%d, %d), question [%d, %d), "
                      "n_tokens %lld (want 0 <= needle_start < needle_end <= question_start < "
                      "question_end <= n_tokens, all four set)",
                      path, m->needle_start, m->needle_end, m->question_start, m->question_end, m->n_tokens);
        hsize_t idx = 0;
        if (rc == AB_OK) H5Literate(f, H5_INDEX_NAME, H5_ITER_NATIVE, &idx, collect_layer, m);
        qsort(m->layers, (size_t)m->n_layers, sizeof(int), cmp_int);
        if (rc == AB_OK && m->n_layers == 0) rc = fail(err, errlen, "trace %s: no /layer_<L> groups", path);
    }
    if (f >= 0) H5Fclose(f);
    H5Eset_auto2(H5E_DEFAULT, efn, edata);
    return rc;
}
