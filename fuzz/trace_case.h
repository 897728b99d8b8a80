/* trace_case.h — one structured case of the trace-loader fuzzer
 * (fuzz/fuzz_trace.c), shared with its replay in
 * tests/test_fuzz_regressions.c. The input bytes describe a trace file —
 * root attributes (format, version, n_tokens, answer spans), up to three
 * layers with their shapes, dtypes (float32, float16, tagged and untagged
 * 16-bit integers, float64, int32), ranks, mismatched K/V shapes, a K/V
 * head map of any length and values, a scale attribute, a NaN anywhere —
 * and a requested slice. The case writes that file with the HDF5 C API
 * (well-formed HDF5, so the fuzzing is of attnbench's validation, not of
 * libhdf5's parser), then runs what `trace-info` and the trace task run:
 * ab_trace_meta_read, ab_trace_check per layer and ab_trace_load. The
 * invariants: every call returns; an error is one line naming the file; a
 * successful load holds only finite values. */
#ifndef AB_FUZZ_TRACE_CASE_H
#define AB_FUZZ_TRACE_CASE_H

#include <hdf5.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "datasets/gen/trace.h"

typedef struct fz_in {
    const uint8_t *d;
    size_t n, at;
} fz_in;

/* the next input byte (0 once the input is used up) */
static inline unsigned fz_byte(fz_in *x) { return x->at < x->n ? x->d[x->at++] : 0u; }

static inline void fz_attr_int(hid_t o, const char *name, int v)
{
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(o, name, H5T_STD_I32LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    if (a >= 0) {
        H5Awrite(a, H5T_NATIVE_INT, &v);
        H5Aclose(a);
    }
    H5Sclose(sp);
}

static inline void fz_attr_str(hid_t o, const char *name, const char *v)
{
    hid_t st = H5Tcopy(H5T_C_S1);
    H5Tset_size(st, strlen(v) + 1);
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(o, name, st, sp, H5P_DEFAULT, H5P_DEFAULT);
    if (a >= 0) {
        H5Awrite(a, st, v);
        H5Aclose(a);
    }
    H5Sclose(sp);
    H5Tclose(st);
}

/* a dataset of rank `rank` with dims (dims[0..rank)), element kind k:
 * 0 f32, 1 f16, 2 bf16 bits tagged, 3 u16 untagged, 4 f64, 5 i32; values a
 * seeded pattern, one NaN at flat index nan_at (< 0: none) */
static inline void fz_dataset(hid_t g, const char *name, int rank, const hsize_t *dims, int kind, long nan_at)
{
    size_t cnt = 1;
    for (int r = 0; r < rank; r++) cnt *= (size_t)dims[r];
    float *x = malloc(cnt * sizeof *x + 4);
    if (!x) return;
    for (size_t i = 0; i < cnt; i++) x[i] = (float)((double)((i * 2654435761u) % 97) / 64.0 - 0.75);
    if (nan_at >= 0 && (size_t)nan_at < cnt) x[nan_at] = NAN;
    hid_t ft = H5T_IEEE_F32LE, half = -1;
    if (kind == 1) {
        half = H5Tcopy(H5T_IEEE_F32LE);
        H5Tset_fields(half, 15, 10, 5, 0, 10);
        H5Tset_size(half, 2);
        H5Tset_ebias(half, 15);
        ft = half;
    } else if (kind == 2 || kind == 3)
        ft = H5T_STD_U16LE;
    else if (kind == 4)
        ft = H5T_IEEE_F64LE;
    else if (kind == 5)
        ft = H5T_STD_I32LE;
    hid_t sp = H5Screate_simple(rank, dims, NULL);
    hid_t ds = H5Dcreate2(g, name, ft, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (ds >= 0) {
        if (kind == 2 || kind == 3) {
            uint16_t *b = malloc(cnt * sizeof *b + 2);
            for (size_t i = 0; b && i < cnt; i++) {
                uint32_t u;
                memcpy(&u, &x[i], 4);
                b[i] = (uint16_t)(u >> 16);
            }
            if (b) H5Dwrite(ds, H5T_NATIVE_USHORT, H5S_ALL, H5S_ALL, H5P_DEFAULT, b);
            free(b);
            if (kind == 2) fz_attr_str(ds, "dtype", "bfloat16");
        } else if (kind == 5) {
            int32_t *b = malloc(cnt * sizeof *b + 4);
            for (size_t i = 0; b && i < cnt; i++) b[i] = (int32_t)(i % 7);
            if (b) H5Dwrite(ds, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, b);
            free(b);
        } else
            H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, x);
        H5Dclose(ds);
    }
    H5Sclose(sp);
    if (half >= 0) H5Tclose(half);
    free(x);
}

/* An error message must be one line that names the file. */
static inline int fz_msg_ok(const char *err, const char *path)
{
    return err[0] && strstr(err, path) && !strchr(err, '\n');
}

/* Build the case's file at path and run the readers on it. 0: every
 * invariant held; -1 with the broken one in why. */
static inline int fuzz_trace_case(const uint8_t *data, size_t size, const char *path, char *why, size_t wl)
{
    fz_in x = { data, size, 0 };
    H5E_auto2_t efn;
    void *edata;
    H5Eget_auto2(H5E_DEFAULT, &efn, &edata);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) {
        H5Eset_auto2(H5E_DEFAULT, efn, edata);
        return 0; /* nowhere to write: nothing to test */
    }
    const unsigned root = fz_byte(&x);
    if ((root & 3) == 0)
        fz_attr_str(f, "format", "attnbench-trace");
    else if ((root & 3) == 1)
        fz_attr_str(f, "format", "something-else");
    else if ((root & 3) == 2)
        fz_attr_int(f, "format", 7);
    if (root & 4) fz_attr_int(f, "version", (int)(fz_byte(&x) % 5));
    if (root & 8) fz_attr_int(f, "n_tokens", (int)fz_byte(&x) - 8);
    if (root & 16) {
        fz_attr_int(f, "needle_start", (int)fz_byte(&x) - 4);
        fz_attr_int(f, "needle_end", (int)fz_byte(&x) - 4);
        fz_attr_int(f, "question_start", (int)fz_byte(&x) - 4);
        if (!(root & 32)) fz_attr_int(f, "question_end", (int)fz_byte(&x) - 4);
    }
    if (root & 64) fz_attr_str(f, "source", "fuzz");
    const int nl = (int)(fz_byte(&x) % 4);
    for (int li = 0; li < nl; li++) {
        const unsigned sh = fz_byte(&x), ty = fz_byte(&x), mp = fz_byte(&x);
        char gname[32];
        snprintf(gname, sizeof gname, "layer_%u", fz_byte(&x) % 6);
        if (H5Lexists(f, gname, H5P_DEFAULT) > 0) continue;
        hid_t g = H5Gcreate2(f, gname, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        if (g < 0) continue;
        const hsize_t H = 1 + sh % 6, Hkv = 1 + (sh / 6) % 4, N = 1 + fz_byte(&x) % 40,
                      d = 1 + fz_byte(&x) % 8;
        const int rank = ty & 0x40 ? 2 + (int)(ty >> 7) * 2 : 3; /* 2 or 4 when set */
        const int kind = (int)(ty % 6), kind_kv = ty & 0x20 ? (int)((ty >> 3) % 6) : kind;
        const long nan_at = ty & 0x80 ? (long)fz_byte(&x) : -1;
        hsize_t dq[4] = { H, N, d, 2 }, dk[4] = { Hkv, N, d, 2 }, dv[4] = { Hkv, N, d, 2 };
        if (mp & 0x10) dk[1] = N + 1; /* K longer than Q */
        if (mp & 0x20) dv[2] = d + 1; /* V wider than K */
        if (!(mp & 0x40)) fz_dataset(g, "q", rank, dq, kind, -1);
        fz_dataset(g, "k", 3, dk, kind_kv, -1);
        fz_dataset(g, "v", 3, dv, kind_kv, nan_at);
        if (mp & 1) { /* a head map: its length and values from the input */
            hsize_t m = (mp & 2) ? H : 1 + fz_byte(&x) % 8;
            int32_t *v = malloc(sizeof *v * (size_t)m);
            for (hsize_t i = 0; v && i < m; i++) v[i] = (int32_t)(fz_byte(&x) % 7) - 1;
            hid_t sp = H5Screate_simple(1, &m, NULL);
            hid_t ds = H5Dcreate2(g, "kv_map", (mp & 4) ? H5T_IEEE_F32LE : H5T_STD_I32LE, sp, H5P_DEFAULT,
                                  H5P_DEFAULT, H5P_DEFAULT);
            if (ds >= 0 && v) {
                H5Dwrite(ds, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, v);
                H5Dclose(ds);
            } else if (ds >= 0)
                H5Dclose(ds);
            H5Sclose(sp);
            free(v);
        }
        if (mp & 8) {
            hid_t sp = H5Screate(H5S_SCALAR);
            hid_t a = H5Acreate2(g, "scale", H5T_IEEE_F32LE, sp, H5P_DEFAULT, H5P_DEFAULT);
            const float sv[4] = { 0.125f, -1.0f, 0.0f, NAN };
            if (a >= 0) {
                H5Awrite(a, H5T_NATIVE_FLOAT, &sv[(mp >> 7) * 2 + (fz_byte(&x) & 1)]);
                H5Aclose(a);
            }
            H5Sclose(sp);
        }
        H5Gclose(g);
    }
    H5Fclose(f);
    H5Eset_auto2(H5E_DEFAULT, efn, edata);

    char err[600] = "";
    ab_trace_meta *m = calloc(1, sizeof *m);
    if (!m) return 0;
    int rc = ab_trace_meta_read(path, m, err, sizeof err);
    if (rc != AB_OK && !fz_msg_ok(err, path)) {
        snprintf(why, wl, "meta_read: bad message '%s'", err);
        free(m);
        return -1;
    }
    const unsigned req = fz_byte(&x);
    for (int li = 0; rc == AB_OK && li < m->n_layers; li++) {
        ab_trace_info in;
        err[0] = 0;
        if (ab_trace_check(path, m->layers[li], NULL, &in, err, sizeof err) != AB_OK) {
            if (!fz_msg_ok(err, path)) {
                snprintf(why, wl, "check layer %d: bad message '%s'", m->layers[li], err);
                free(m);
                return -1;
            }
            continue;
        }
        /* a request: maybe larger than the file by one in each dimension */
        ab_shape s = { .heads = in.heads + (int)(req & 1) - (in.heads > 1 && (req & 2)),
                       .seq_len = in.n + (int)((req >> 2) & 1),
                       .head_dim = in.d + (int)((req >> 3) & 1),
                       .causal = 1 };
        s.scale = 1.0f / sqrtf((float)s.head_dim);
        const size_t t = (size_t)s.heads * s.seq_len * s.head_dim;
        float *q = malloc(t * 4 + 4), *k = malloc(t * 4 + 4), *v = malloc(t * 4 + 4);
        err[0] = 0;
        int lr = q && k && v ? ab_trace_load(path, m->layers[li], &s, q, k, v, err, sizeof err) : AB_ENOMEM;
        if (lr == AB_OK) {
            for (size_t i = 0; i < t; i++)
                if (!isfinite(q[i]) || !isfinite(k[i]) || !isfinite(v[i])) {
                    snprintf(why, wl, "layer %d: load accepted a non-finite value at %zu", m->layers[li], i);
                    lr = -100;
                    break;
                }
        } else if (lr != AB_ENOMEM && !fz_msg_ok(err, path)) {
            snprintf(why, wl, "load layer %d: bad message '%s'", m->layers[li], err);
            lr = -100;
        }
        free(q);
        free(k);
        free(v);
        if (lr == -100) {
            free(m);
            return -1;
        }
    }
    free(m);
    return 0;
}

#endif
