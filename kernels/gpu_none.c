/* gpu_none.c — GPU entry points of a CPU-only build: no device, and why. */
#include "kernels/kernels.h"

#include <stdio.h>

#ifndef AB_HAVE_CUDA
int ab_gpu_count(char *why, size_t whylen)
{
    if (why && whylen) snprintf(why, whylen, "attnbench was built without CUDA (nvcc not found or CUDA=no)");
    return 0;
}
#endif
