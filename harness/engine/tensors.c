/* tensors.c — `run --save-tensors`: the raw tensors behind a point, so anyone
 * can re-check a number outside attnbench (h5py, MATLAB, Julia).
 *
 * Each problem (Q, K, V, the scored rows and their fp64 reference output;
 * heldout_q, heldout_k, heldout_v when a method of the run reads a held-out
 * draw) and each point (the method's output and its layout) is written by the
 * child that produced it into its own small HDF5 file in OUT.h5.tensors/;
 * the results store copies every file of that directory into /tensors/NAME
 * of OUT.h5 on each rewrite (harness/store/store.c). The directory stays the
 * source of truth, so crash safety and --resume are unchanged. */
#include "harness/engine/tensors.h"
#include "runtime/layout.h"

#include <errno.h>
#include <hdf5.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static int put(hid_t loc, const char *name, hid_t type, int rank, const hsize_t *dims, const void *data)
{
    hid_t sp = H5Screate_simple(rank, dims, NULL);
    if (sp < 0) return -1;
    hid_t ds = H5Dcreate2(loc, name, type, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    int rc = -1;
    if (ds >= 0) {
        rc = H5Dwrite(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0 ? -1 : 0;
        H5Dclose(ds);
    }
    H5Sclose(sp);
    return rc;
}

static int put_attr_int(hid_t loc, const char *name, long long v)
{
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(loc, name, H5T_NATIVE_LLONG, sp, H5P_DEFAULT, H5P_DEFAULT);
    int rc = a >= 0 && H5Awrite(a, H5T_NATIVE_LLONG, &v) >= 0 ? 0 : -1;
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
    return rc;
}

static int put_attr_str(hid_t loc, const char *name, const char *v)
{
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, strlen(v) + 1);
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(loc, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
    int rc = a >= 0 && H5Awrite(a, t, v) >= 0 ? 0 : -1;
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(t);
    return rc;
}

int ab_tensors_dir(const char *out_path, char *dir, size_t n)
{
    if ((size_t)snprintf(dir, n, "%s.tensors", out_path) >= n) return -1;
    if (mkdir(dir, 0777) < 0 && errno != EEXIST) return -1;
    return 0;
}

/* Create DIR/NAME.h5 via a temporary name; the caller fills it. */
static hid_t create_file(const char *dir, const char *name, char *tmp, size_t tn, char *final, size_t fn)
{
    snprintf(tmp, tn, "%s/.%s.h5.tmp", dir, name);
    snprintf(final, fn, "%s/%s.h5", dir, name);
    return H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
}

static int finish_file(hid_t f, int ok, const char *tmp, const char *final, char *err, size_t errlen)
{
    if (H5Fclose(f) < 0) ok = 0;
    if (ok && rename(tmp, final) == 0) return 0;
    remove(tmp);
    snprintf(err, errlen, "cannot write %s", final);
    return -1;
}

int ab_tensors_write_problem(const char *dir, const char *name, const ab_problem *pb, const ab_refset *ref,
                             char *err, size_t errlen)
{
    char tmp[1200], final[1200];
    hid_t f = create_file(dir, name, tmp, sizeof tmp, final, sizeof final);
    if (f < 0) {
        snprintf(err, errlen, "cannot create %s", final);
        return -1;
    }
    hsize_t d3[3] = { (hsize_t)pb->s.heads, (hsize_t)pb->s.seq_len, (hsize_t)pb->s.head_dim };
    hsize_t dr[1] = { (hsize_t)ref->n_rows };
    hsize_t dro[3] = { (hsize_t)ref->heads, (hsize_t)ref->n_rows, (hsize_t)ref->d };
    int ok =
        put(f, "q", H5T_NATIVE_FLOAT, 3, d3, pb->q) == 0 &&
        put(f, "k", H5T_NATIVE_FLOAT, 3, d3, pb->k) == 0 &&
        put(f, "v", H5T_NATIVE_FLOAT, 3, d3, pb->v) == 0 &&
        put(f, "scored_rows", H5T_NATIVE_INT, 1, dr, ref->rows) == 0 &&
        put(f, "ref_out", H5T_NATIVE_DOUBLE, 3, dro, ref->out) == 0 &&
        put_attr_int(f, "causal", pb->s.causal) == 0 &&
        put_attr_str(
            f, "layout",
            "q, k, v: (heads, seq_len, head_dim) fp32; ref_out: (heads, scored_rows, head_dim) fp64") == 0;
    if (ok && pb->heldout) /* the held-out draw the methods with ab_method.heldout profiled */
        ok = put(f, "heldout_q", H5T_NATIVE_FLOAT, 3, d3, pb->heldout->q) == 0 &&
             put(f, "heldout_k", H5T_NATIVE_FLOAT, 3, d3, pb->heldout->k) == 0 &&
             put(f, "heldout_v", H5T_NATIVE_FLOAT, 3, d3, pb->heldout->v) == 0 &&
             put_attr_int(f, "heldout_seed", (long long)pb->heldout->seed) == 0;
    return finish_file(f, ok, tmp, final, err, errlen);
}

int ab_tensors_write_point(const char *dir, const char *key, const char *problem, const ab_problem *pb,
                           const ab_layout *l, const float *out, char *err, size_t errlen)
{
    char tmp[1200], final[1200];
    hid_t f = create_file(dir, key, tmp, sizeof tmp, final, sizeof final);
    if (f < 0) {
        snprintf(err, errlen, "cannot create %s", final);
        return -1;
    }
    hsize_t d3[3] = { (hsize_t)pb->s.heads, (hsize_t)pb->s.seq_len, (hsize_t)pb->s.head_dim };
    int ok = put(f, "out", H5T_NATIVE_FLOAT, 3, d3, out) == 0 && put_attr_str(f, "problem", problem) == 0 &&
             put_attr_str(f, "layout_kind", ab_layout_kind_name(l->kind)) == 0 &&
             put_attr_int(f, "block_q", l->block_q) == 0 && put_attr_int(f, "block_k", l->block_k) == 0;
    hsize_t rows[1] = { (hsize_t)l->heads * (hsize_t)l->n_qblocks + 1 };
    if (ok && l->blk_ptr) {
        hsize_t nn[1] = { (hsize_t)l->blk_ptr[rows[0] - 1] };
        ok = put(f, "blk_ptr", H5T_NATIVE_INT64, 1, rows, l->blk_ptr) == 0 &&
             (nn[0] == 0 || put(f, "blk_idx", H5T_NATIVE_INT32, 1, nn, l->blk_idx) == 0);
    }
    if (ok && l->tok_ptr) {
        hsize_t nn[1] = { (hsize_t)l->tok_ptr[rows[0] - 1] };
        ok = put(f, "tok_ptr", H5T_NATIVE_INT64, 1, rows, l->tok_ptr) == 0 &&
             (nn[0] == 0 || put(f, "tok_idx", H5T_NATIVE_INT32, 1, nn, l->tok_idx) == 0);
    }
    return finish_file(f, ok, tmp, final, err, errlen);
}
