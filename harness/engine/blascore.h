/* blascore.h — make OpenBLAS run the kernels this CPU deserves.
 *
 * OpenBLAS (DYNAMIC_ARCH builds, as Debian's) picks its kernels once, when
 * the library loads, from the CPU it recognises. A release older than the
 * CPU does not recognise it and falls back to an old core: OpenBLAS 0.3.21
 * runs its Prescott (SSE3) SGEMM on an AVX-512 Xeon, 3-6x below what the
 * machine can do, which makes the dense_blas baseline and the SGEMM
 * roofline of `make bench` artefacts.
 *
 * ab_blas_core_setup(), called first thing in main(), compares the core
 * OpenBLAS chose with the best core the CPU's ISA supports (AVX-512:
 * SkylakeX; AVX2+FMA: Haswell, or Zen on AMD; AVX: Sandybridge). When
 * OpenBLAS chose a lower one and OPENBLAS_CORETYPE is unset, it checks
 * the better core in a child process (one SGEMM against a double-precision
 * reference), then re-executes the program with OPENBLAS_CORETYPE set, so
 * the library initialises with it. A value the environment set is never
 * overridden (only warned about when it is below the CPU). What happened
 * is said on stderr and recorded in every results file:
 * openblas_coretype (running), openblas_coretype_detected (OpenBLAS's own
 * pick), openblas_coretype_best (the CPU's), openblas_coretype_source
 * (library | environment | attnbench).
 *
 * Testing aid: AB_BLAS_SIMULATE=CORE (with OPENBLAS_CORETYPE unset) first
 * forces OpenBLAS onto CORE as if it had detected it, so the whole path
 * (detect, check, re-execute) runs on any machine. */
#ifndef AB_BLASCORE_H
#define AB_BLASCORE_H

typedef struct ab_blas_core {
    char running[32];  /* openblas_get_corename() now */
    char detected[32]; /* the core OpenBLAS chose by itself ("" when the environment forced one) */
    char best[32];     /* the best core this CPU's ISA supports ("" if unknown) */
    char source[16];   /* library | environment | attnbench */
    char note[1024];   /* one line for the terminal, "" when there is nothing to say */
} ab_blas_core;

/* Call first in main(), before any thread exists. It may re-execute the
 * program (argv unchanged) and, when argv[1] is "__blas-probe", runs the
 * check and exits. Prints nothing: the command prints the note with
 * ab_blas_core_announce() once its input is known to be good (a bad config
 * gets its one error line, nothing else). */
void ab_blas_core_setup(int argc, char **argv);
/* Print the note (if any) on stderr, once. */
void ab_blas_core_announce(void);
/* What setup found (valid after setup; before it, running/source only). */
const ab_blas_core *ab_blas_core_info(void);

/* The decision alone (tested): the core to run instead of `detected` on a
 * CPU whose best core is `best`, or NULL to keep it. Ranks cores by the
 * vector ISA of their SGEMM kernels; unknown names are never replaced. */
const char *ab_blas_pick_core(const char *detected, const char *best);
/* The best core for this CPU's ISA, "" when below AVX. */
const char *ab_blas_best_core(void);
/* ISA rank of an OpenBLAS core name: 4 AVX-512, 3 AVX2, 2 AVX, 1 SSE, 0 unknown. */
int ab_blas_core_rank(const char *core);

#endif
