/* gpu_none.c — the GPU interface (kernels/cuda/ab_cuda.h) in a build
 * without CUDA: no device, and why; every other entry AB_EUNSUPPORTED.
 * Compiled always; with CUDA the .cu files define these instead. */
#include "kernels/cuda/ab_cuda.h"

#include <stdio.h>
#include <string.h>

#ifndef AB_HAVE_CUDA
int ab_cuda_built(void) { return 0; }

int ab_cuda_device_count(char *why, size_t whylen)
{
    if (why && whylen) snprintf(why, whylen, "attnbench was built without CUDA (nvcc not found or CUDA=no)");
    return 0;
}

int ab_cuda_device_info(int dev, ab_cuda_info *info, char *why, size_t whylen)
{
    memset(info, 0, sizeof *info);
    ab_cuda_device_count(why, whylen);
    return AB_EUNSUPPORTED;
}

int ab_cuda_open(ab_cuda **g, const ab_shape *s, ab_cuda_dtype dt, char *err, size_t errlen)
{
    *g = NULL;
    ab_cuda_device_count(err, errlen);
    return AB_EUNSUPPORTED;
}

void ab_cuda_close(ab_cuda *g) {}
const char *ab_cuda_error(const ab_cuda *g) { return "built without CUDA"; }
int ab_cuda_upload_qkv(ab_cuda *g, const float *q, const float *k, const float *v) { return AB_EUNSUPPORTED; }
int ab_cuda_download_out(ab_cuda *g, float *out) { return AB_EUNSUPPORTED; }
int ab_cuda_upload_layout(ab_cuda *g, const ab_layout *l) { return AB_EUNSUPPORTED; }
int ab_cuda_flash(ab_cuda *g) { return AB_EUNSUPPORTED; }
int ab_cuda_blocksparse(ab_cuda *g) { return AB_EUNSUPPORTED; }
int ab_cuda_gather(ab_cuda *g) { return AB_EUNSUPPORTED; }
int ab_cuda_run_layout(ab_cuda *g, ab_layout_kind kind) { return AB_EUNSUPPORTED; }
int ab_cuda_dense_cublas(ab_cuda *g) { return AB_EUNSUPPORTED; }
int ab_cuda_select_window(ab_cuda *g, int block_q, int block_k, int window, int sink_blocks)
{
    return AB_EUNSUPPORTED;
}
int ab_cuda_select_oracle_topk(ab_cuda *g, int block_q, int block_k, double topk) { return AB_EUNSUPPORTED; }
int ab_cuda_download_layout(ab_cuda *g, ab_layout *l) { return AB_EUNSUPPORTED; }
int ab_cuda_timer_start(ab_cuda *g) { return AB_EUNSUPPORTED; }
int ab_cuda_timer_stop(ab_cuda *g, double *ms)
{
    *ms = 0;
    return AB_EUNSUPPORTED;
}
int ab_cuda_sync(ab_cuda *g) { return AB_EUNSUPPORTED; }
#endif
