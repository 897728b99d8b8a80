/* test_block_score.c — the register-tiled products of methods/block_score.h
 * that every dynamic selector and custom run() scores with (bs_gemm_nt,
 * bs_logits, bs_gemm_nt_packed, bs_gemm_nn), bs_transpose and bs_max, on shapes that
 * cross every edge of the tiling: rows not a multiple of the tile's
 * (BS_MR), columns not a multiple of the vector width or of the 64-column
 * panel, depths below, at and across the BS_KC chunk.
 *
 * Each output element is specified as one chain in depth order: acc =
 * fl(pre * a[c]) * b[c] + acc, fused where the build has FMA, then scaled by
 * post. The test recomputes that chain in scalar code (fmaf under FMA) and
 * asks for the same bits, so a lost tail, a misplaced column or a partial
 * sum resumed from the wrong place fails, and the AVX2 and AVX-512 builds
 * are held to the same numbers; it also checks the result against fp64.
 */
#include <criterion/criterion.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "methods/anchor_core.h"
#include "methods/block_score.h"
#include "methods/bucket.h"
#include "methods/lsh.h"

static float urand(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((*s >> 40) * 0x1.0p-24) - 0.5f;
}

static float *rnd(size_t n, uint64_t seed)
{
    float *x = malloc(n * sizeof *x);
    cr_assert(x);
    for (size_t i = 0; i < n; i++) x[i] = urand(&seed);
    return x;
}

/* the specified chain: acc = fl(pre a) b + acc in c order, then post */
static float chain(const float *a, int sa, const float *b, int sb, int D, float pre, float post, float init)
{
    float acc = init;
    for (int c = 0; c < D; c++) {
#if defined(__FMA__)
        acc = fmaf(a[(size_t)c * sa] * pre, b[(size_t)c * sb], acc);
#else
        acc = a[(size_t)c * sa] * pre * b[(size_t)c * sb] + acc;
#endif
    }
    return post * acc;
}

static double dot64(const float *a, int sa, const float *b, int sb, int D)
{
    double s = 0;
    for (int c = 0; c < D; c++) s += (double)a[(size_t)c * sa] * b[(size_t)c * sb];
    return s;
}

static const int ms[] = { 1, 2, 5, 6, 7, 13 };
static const int ns[] = { 1, 7, 8, 9, 16, 63, 64, 65, 130 };
static const int ds[] = { 1, 5, 64, 127, 128, 129, 300 };
#define NA(x) ((int)(sizeof x / sizeof x[0]))

Test(block_score, gemm_nt_is_the_specified_chain_on_every_tile_edge)
{
    for (int a = 0; a < NA(ms); a++)
        for (int b = 0; b < NA(ns); b++)
            for (int e = 0; e < NA(ds); e++) {
                const int m = ms[a], n = ns[b], D = ds[e];
                const int lda = D + 3, ldb = D + 1, ldc = n + 2; /* strides wider than the rows */
                float *A = rnd((size_t)m * lda, 11u + (uint64_t)m),
                      *B = rnd((size_t)n * ldb, 7u + (uint64_t)n);
                float *C = malloc((size_t)m * ldc * sizeof *C), *L = malloc((size_t)m * ldc * sizeof *L);
                float *P = malloc((size_t)m * ldc * sizeof *P);
                float *bt = malloc((size_t)(D > BS_KC ? D : BS_KC) * BS_PANEL * sizeof *bt);
                float *bp = malloc((size_t)((n + BS_PANEL - 1) / BS_PANEL) * BS_PANEL * D * sizeof *bp);
                cr_assert(C && L && P && bt && bp);
                for (int i = 0; i < m * ldc; i++) C[i] = L[i] = P[i] = 1234.5f; /* the gaps stay */
                bs_gemm_nt(A, lda, m, B, ldb, n, D, 0.37f, C, ldc, bt);
                bs_logits(A, m, B, n, D, 0.37f, L, bt); /* rows packed: lda = ldb = D, ldc = n */
                bs_pack_nt(B, ldb, n, D, bp);
                bs_gemm_nt_packed(A, lda, m, bp, n, D, 0.37f, P, ldc);
                for (int i = 0; i < m; i++)
                    for (int j = 0; j < ldc; j++) {
                        const float *ar = A + (size_t)i * lda, *br = B + (size_t)j * ldb;
                        if (j >= n) {
                            cr_assert(C[(size_t)i * ldc + j] == 1234.5f && P[(size_t)i * ldc + j] == 1234.5f,
                                      "m %d n %d D %d: column %d past n written", m, n, D, j);
                            continue;
                        }
                        const float want = chain(ar, 1, br, 1, D, 1.0f, 0.37f, 0.0f);
                        cr_assert(C[(size_t)i * ldc + j] == want,
                                  "nt m %d n %d D %d (%d, %d): %.9g, chain %.9g", m, n, D, i, j,
                                  C[(size_t)i * ldc + j], want);
                        cr_assert(P[(size_t)i * ldc + j] == want,
                                  "packed m %d n %d D %d (%d, %d): %.9g, chain %.9g", m, n, D, i, j,
                                  P[(size_t)i * ldc + j], want);
                        cr_assert(fabs(want - 0.37 * dot64(ar, 1, br, 1, D)) <= 1e-5 * (1 + sqrt(D)),
                                  "nt m %d n %d D %d: far from fp64", m, n, D);
                    }
                /* bs_logits: the scale multiplies the query element, the rows
                 * are packed (A and B read as (m, D) and (n, D) contiguous) */
                for (int i = 0; i < m; i++)
                    for (int j = 0; j < n; j++) {
                        const float want =
                            chain(A + (size_t)i * D, 1, B + (size_t)j * D, 1, D, 0.37f, 1.0f, 0.0f);
                        cr_assert(L[(size_t)i * n + j] == want, "logits m %d n %d D %d (%d, %d)", m, n, D, i,
                                  j);
                    }
                /* bs_gemm_chunks: pre != 1 scales A once (the same fl(pre a)),
                 * in key chunks over threads or one chunk */
                float *G = malloc((size_t)m * ldc * sizeof *G), *G2 = malloc((size_t)m * ldc * sizeof *G2);
                cr_assert(G && G2);
                cr_assert_eq(bs_gemm_chunks(A, lda, m, B, ldb, n, D, 0.37f, 1.0f, G, ldc, bt, 64, 1), 0);
                cr_assert_eq(bs_gemm_chunks(A, lda, m, B, ldb, n, D, 1.0f, 0.37f, G2, ldc, bt, 1 << 20, 0),
                             0);
                for (int i = 0; i < m; i++)
                    for (int j = 0; j < n; j++) {
                        const float *ar = A + (size_t)i * lda, *br = B + (size_t)j * ldb;
                        cr_assert(G[(size_t)i * ldc + j] == chain(ar, 1, br, 1, D, 0.37f, 1.0f, 0.0f),
                                  "chunks pre m %d n %d D %d (%d, %d)", m, n, D, i, j);
                        cr_assert(G2[(size_t)i * ldc + j] == chain(ar, 1, br, 1, D, 1.0f, 0.37f, 0.0f),
                                  "chunks post m %d n %d D %d (%d, %d)", m, n, D, i, j);
                    }
                free(G), free(G2);
                free(A), free(B), free(C), free(L), free(P), free(bt), free(bp);
            }
}

/* bs_transpose (the 16 x 16 register blocks behind every panel, pack and
 * gather) against the copy loop: row counts and column counts across the
 * 16-block edges, source rows at a stride wider than the columns or
 * gathered by index (out of order, with repeats), and a destination
 * stride wider than the rows whose gaps must stay untouched. bs_pack_gather
 * on the same rows: panels of 64, the rows past n zero. */
Test(block_score, transpose_is_the_copy_loop)
{
    static const int njs[] = { 1, 15, 16, 17, 33, 64, 70 }, ncs[] = { 1, 15, 16, 17, 64, 65, 130 };
    uint64_t s = 9;
    for (int a = 0; a < NA(njs); a++)
        for (int b = 0; b < NA(ncs); b++)
            for (int g = 0; g < 2; g++) {
                const int nj = njs[a], nc = ncs[b], lds = nc + 5, ldd = nj + 3, nsrc = 2 * nj + 7;
                float *src = rnd((size_t)nsrc * lds, 31u + (uint64_t)(nj * 1000 + nc));
                int32_t *idx = malloc((size_t)nj * sizeof *idx);
                float *dst = malloc((size_t)nc * ldd * sizeof *dst);
                const int np = (nj + BS_PANEL - 1) / BS_PANEL;
                float *bp = malloc((size_t)np * BS_PANEL * nc * sizeof *bp);
                cr_assert(idx && dst && bp);
                for (int j = 0; j < nj; j++) {
                    s = s * 6364136223846793005ull + 1442695040888963407ull;
                    idx[j] = (int32_t)((s >> 33) % (uint64_t)nsrc); /* any order, repeats */
                }
                for (int t = 0; t < nc * ldd; t++) dst[t] = 1234.5f;
                bs_transpose(src, (size_t)lds, g ? idx : NULL, nj, nc, dst, (size_t)ldd);
                for (int c = 0; c < nc; c++)
                    for (int j = 0; j < ldd; j++) {
                        const float got = dst[(size_t)c * ldd + j];
                        if (j >= nj) {
                            cr_assert(got == 1234.5f, "nj %d nc %d gather %d: gap (%d, %d) written", nj, nc,
                                      g, c, j);
                            continue;
                        }
                        const float want = src[(size_t)(g ? idx[j] : j) * lds + c];
                        cr_assert(got == want, "nj %d nc %d gather %d: (%d, %d) %g, want %g", nj, nc, g, c, j,
                                  got, want);
                    }
                if (g) { /* rows of length lds gathered into 64-row panels */
                    float *K = rnd((size_t)nsrc * nc, 77u + (uint64_t)nc);
                    bs_pack_gather(K, nc, idx, nj, bp);
                    for (int p = 0; p < np; p++)
                        for (int c = 0; c < nc; c++)
                            for (int j = 0; j < BS_PANEL; j++) {
                                const int row = p * BS_PANEL + j;
                                const float want = row < nj ? K[(size_t)idx[row] * nc + c] : 0.0f;
                                cr_assert(bp[((size_t)p * nc + c) * BS_PANEL + j] == want,
                                          "pack_gather nj %d nc %d: panel %d (%d, %d)", nj, nc, p, c, j);
                            }
                    free(K);
                }
                free(src), free(idx), free(dst), free(bp);
            }
}

/* bs_row_chains16 against one scalar loop per row (the bits dhsa's chunk
 * boundaries and nosa_proxy's value norms relied on before): sixteen
 * rows in registers (AVX-512, d a multiple of 16), four rows side by side
 * otherwise, with and without the neighbour products; the entries past n
 * untouched. */
Test(block_score, row_chains_are_the_scalar_chains)
{
    static const int ns16[] = { 1, 7, 15, 16 }, dss[] = { 1, 15, 16, 17, 64, 80, 129 };
    for (int a = 0; a < NA(ns16); a++)
        for (int b = 0; b < NA(dss); b++)
            for (int g = 0; g < 2; g++) {
                const int n = ns16[a], d = dss[b], lda = d + 3 * g; /* padded rows too */
                float *x = rnd((size_t)(n + 1) * lda, 400u + (uint64_t)(n * 1000 + d));
                for (int i = 0; i < (n + 1) * lda; i += 7) x[i] *= 1e3f; /* spread the magnitudes */
                double sq[17], dt[17];
                for (int w = 0; w < 2; w++) {
                    for (int u = 0; u < 17; u++) sq[u] = dt[u] = -7.0;
                    bs_row_chains16(x + lda, (size_t)lda, n, d, sq, w ? dt : NULL);
                    for (int u = 0; u < 17; u++) {
                        if (u >= n) {
                            cr_assert(sq[u] == -7.0 && dt[u] == -7.0, "n %d d %d: lane %d written", n, d, u);
                            continue;
                        }
                        const float *r = x + (size_t)(u + 1) * lda, *p = r - lda;
                        double s2 = 0.0, pd = 0.0;
                        for (int c = 0; c < d; c++) {
                            s2 += (double)r[c] * r[c];
                            pd += (double)p[c] * r[c];
                        }
                        cr_assert(sq[u] == s2, "n %d d %d lda %d: sq[%d] %.17g, want %.17g", n, d, lda, u,
                                  sq[u], s2);
                        if (w)
                            cr_assert(dt[u] == pd, "n %d d %d lda %d: dot[%d] %.17g, want %.17g", n, d, lda,
                                      u, dt[u], pd);
                        else
                            cr_assert(dt[u] == -7.0, "n %d d %d: dot written without dot", n, d);
                    }
                }
                free(x);
            }
}

/* bs_row_sq16f: each row's float loop s += x[c] * x[c] (rounded product,
 * then the add) in c order, bit for bit, on and off the register path. */
Test(block_score, float_row_squares_are_the_scalar_loop)
{
    static const int ns16[] = { 1, 7, 15, 16 }, dss[] = { 1, 15, 16, 17, 64, 80, 129 };
    for (int a = 0; a < NA(ns16); a++)
        for (int b = 0; b < NA(dss); b++)
            for (int g = 0; g < 2; g++) {
                const int n = ns16[a], d = dss[b], lda = d + 5 * g;
                float *x = rnd((size_t)n * lda, 900u + (uint64_t)(n * 1000 + d));
                for (int i = 0; i < n * lda; i += 5) x[i] *= 3e3f;
                float sq[17];
                for (int u = 0; u < 17; u++) sq[u] = -7.0f;
                bs_row_sq16f(x, (size_t)lda, n, d, sq);
                for (int u = 0; u < 17; u++) {
                    if (u >= n) {
                        cr_assert(sq[u] == -7.0f, "n %d d %d: lane %d written", n, d, u);
                        continue;
                    }
                    volatile float s = 0.0f; /* one rounding per product and per add */
                    for (int c = 0; c < d; c++) {
                        volatile float p = x[(size_t)u * lda + c] * x[(size_t)u * lda + c];
                        s = s + p;
                    }
                    cr_assert(sq[u] == s, "n %d d %d lda %d: sq[%d] %.9g, want %.9g", n, d, lda, u, sq[u],
                              (double)s);
                }
                free(x);
            }
}

Test(block_score, gemm_nn_overwrites_or_adds_as_asked)
{
    for (int a = 0; a < NA(ms); a++)
        for (int b = 0; b < NA(ns); b++)
            for (int e = 0; e < NA(ds); e++) {
                const int m = ms[a], n = ns[b], K = ds[e];
                const int lda = K + 2, ldb = n + 5, ldc = n + 1;
                float *A = rnd((size_t)m * lda, 3u + (uint64_t)K),
                      *B = rnd((size_t)K * ldb, 5u + (uint64_t)n);
                float *C0 = rnd((size_t)m * ldc, 9u), *C = malloc((size_t)m * ldc * sizeof *C);
                float *bt = malloc((size_t)BS_KC * BS_PANEL * sizeof *bt);
                cr_assert(C && bt);
                for (int add = 0; add < 2; add++) {
                    memcpy(C, C0, (size_t)m * ldc * sizeof *C);
                    bs_gemm_nn(A, lda, m, B, ldb, K, n, C, ldc, add, bt);
                    for (int i = 0; i < m; i++)
                        for (int j = 0; j < ldc; j++) {
                            const float got = C[(size_t)i * ldc + j], c0 = C0[(size_t)i * ldc + j];
                            if (j >= n) {
                                cr_assert(got == c0, "nn: column %d past n written", j);
                                continue;
                            }
                            const float want =
                                chain(A + (size_t)i * lda, 1, B + j, ldb, K, 1.0f, 1.0f, add ? c0 : 0);
                            cr_assert(got == want, "nn add %d m %d n %d K %d (%d, %d): %.9g, chain %.9g", add,
                                      m, n, K, i, j, got, want);
                        }
                }
                free(A), free(B), free(C0), free(C), free(bt);
            }
}

/* The ragged forms: bs_gemm_nt_packed_rag writes register tile t's
 * columns j < ncol[t] as the full product's chains and nothing past them;
 * bs_gemm_nn_rag with klim[t] gives, on an A whose columns past klim[t]
 * are zero in tile t, the bits of the full product (the chains without
 * their fma(0, b, s) = s steps). Both with B's rows a panel's (n = ldb =
 * BS_PANEL: bs_gemm_nn reads them in place) and padded. */
Test(block_score, ragged_products_are_the_kept_chains)
{
    static const int rms[] = { 1, 5, 13, 64 }, rns[] = { 9, 64, 130, 256 }, rds[] = { 5, 64, 129, 256 };
    for (int a = 0; a < NA(rms); a++)
        for (int b = 0; b < NA(rns); b++)
            for (int e = 0; e < NA(rds); e++) {
                const int m = rms[a], n = rns[b], D = rds[e], nt = (m + BS_MR - 1) / BS_MR;
                uint64_t sd = 77u + (uint64_t)(m * 7919 + n * 31 + D);
                int lim[64];
                for (int t = 0; t < nt; t++) lim[t] = (int)((urand(&sd) + 0.5f) * (float)(n + 1)) % (n + 1);
                if (nt > 1) lim[nt - 1] = n; /* one tile whole, one maybe empty */
                if (nt > 2) lim[0] = 0;
                /* nt: C = A B^T, B packed */
                float *A = rnd((size_t)m * D, sd), *B = rnd((size_t)n * D, sd + 1);
                float *bp = malloc((size_t)((n + BS_PANEL - 1) / BS_PANEL) * BS_PANEL * D * sizeof *bp);
                float *C = malloc((size_t)m * n * sizeof *C);
                cr_assert(bp && C);
                bs_pack_nt(B, D, n, D, bp);
                for (size_t i = 0; i < (size_t)m * n; i++) C[i] = -7.0f;
                bs_gemm_nt_packed_rag(A, D, m, bp, n, lim, D, 0.5f, C, n);
                for (int i = 0; i < m; i++)
                    for (int j = 0; j < n; j++) {
                        const float got = C[(size_t)i * n + j];
                        if (j >= lim[i / BS_MR]) {
                            cr_assert(got == -7.0f,
                                      "nt rag m %d n %d D %d: (%d, %d) past its tile's %d written", m, n, D,
                                      i, j, lim[i / BS_MR]);
                            continue;
                        }
                        const float want =
                            chain(A + (size_t)i * D, 1, B + (size_t)j * D, 1, D, 1.0f, 0.5f, 0);
                        cr_assert(got == want, "nt rag m %d n %d D %d (%d, %d): %.9g, chain %.9g", m, n, D, i,
                                  j, got, want);
                    }
                free(B), free(bp), free(C);
                /* nn: C (+)= A B, A's tile t zero past lim[t] (K = D here, the width n) */
                const int K = n, nb = D, ldb = D == 64 ? 64 : D + 3;
                float *A2 = rnd((size_t)m * K, sd + 2), *B2 = rnd((size_t)K * ldb, sd + 3);
                for (int i = 0; i < m; i++)
                    for (int c = lim[i / BS_MR]; c < K; c++) A2[(size_t)i * K + c] = 0.0f;
                float *C0 = rnd((size_t)m * nb, sd + 4), *C1 = malloc((size_t)m * nb * sizeof *C1),
                      *C2 = malloc((size_t)m * nb * sizeof *C2);
                float *bt = malloc((size_t)BS_KC * BS_PANEL * sizeof *bt);
                cr_assert(C1 && C2 && bt);
                for (int add = 0; add < 2; add++) {
                    memcpy(C1, C0, (size_t)m * nb * sizeof *C1);
                    memcpy(C2, C0, (size_t)m * nb * sizeof *C2);
                    bs_gemm_nn(A2, K, m, B2, ldb, K, nb, C1, nb, add, bt);
                    bs_gemm_nn_rag(A2, K, m, B2, ldb, K, lim, nb, C2, nb, add, bt);
                    for (int i = 0; i < m; i++)
                        for (int j = 0; j < nb; j++) {
                            const float c0 = C0[(size_t)i * nb + j];
                            const float want =
                                chain(A2 + (size_t)i * K, 1, B2 + j, ldb, K, 1.0f, 1.0f, add ? c0 : 0);
                            cr_assert(C1[(size_t)i * nb + j] == want && C2[(size_t)i * nb + j] == want,
                                      "nn add %d m %d K %d n %d ldb %d (%d, %d): full %.9g, ragged %.9g, "
                                      "chain %.9g",
                                      add, m, K, nb, ldb, i, j, C1[(size_t)i * nb + j],
                                      C2[(size_t)i * nb + j], want);
                        }
                }
                free(A), free(A2), free(B2), free(C0), free(C1), free(C2), free(bt);
            }
}

Test(block_score, max_is_the_scalar_loop)
{
    uint64_t s = 42;
    for (int n = 0; n < 80; n++) {
        float x[80];
        for (int i = 0; i < n; i++) x[i] = urand(&s);
        float want = n ? x[0] : -INFINITY;
        for (int i = 1; i < n; i++) want = x[i] > want ? x[i] : want;
        cr_assert(bs_max(x, n) == want || (n == 0 && isinf(bs_max(x, n))), "n %d", n);
        if (n > 20) { /* a NaN after the first entry is skipped */
            x[n / 2] = NAN;
            want = x[0];
            for (int i = 1; i < n; i++) want = x[i] > want ? x[i] : want;
            cr_assert(bs_max(x, n) == want, "n %d with a NaN", n);
        }
    }
}

/* bs_rowsum (the column and diagonal sums of flexprefill, minference_vs,
 * pbs and hax) gives the same doubles, bit for bit, as the plain loop
 * out[x] += S[i][x - c + dsh i] * w[i] over the rows in order: each weight
 * mode (double, float, none), with zero weights skipped or added, both
 * shifts, row counts across its 8-row passes and ranges across its
 * 32-column blocks (starting off a block). Where zero weights are
 * skipped, their row holds NaN, which a skip must keep out. */
Test(block_score, rowsum_is_the_plain_loop)
{
    const int W = 200, M = 19;
    const size_t lds = W + M + 3;
    float *S = rnd((size_t)M * lds, 7);
    double wd[19];
    float wf[19];
    uint64_t seed = 11;
    for (int i = 0; i < M; i++) {
        wf[i] = urand(&seed) + 0.75f;
        wd[i] = (double)wf[i] / 3.0;
    }
    float *Sn = malloc((size_t)M * lds * sizeof *Sn); /* row 4 NaN, weight 0 */
    cr_assert(Sn);
    memcpy(Sn, S, (size_t)M * lds * sizeof *Sn);
    wd[4] = 0.0;
    wf[4] = 0.0f;
    for (size_t x = 0; x < lds; x++) Sn[4 * lds + x] = NAN;
    static const int rows[] = { 1, 3, 8, 9, 16, 19 };
    for (int mode = 0; mode < 3; mode++)
        for (int skipz = 0; skipz < 2; skipz++)
            for (int dsh = 0; dsh < 2; dsh++)
                for (size_t ri = 0; ri < sizeof rows / sizeof rows[0]; ri++)
                    for (int x0 = 0; x0 < 40; x0 += 13)
                        for (int x1 = x0; x1 <= W; x1 += 37) {
                            const int m = rows[ri], c = dsh ? 2 : 0;
                            const float *A = mode < 2 && skipz ? Sn : S; /* NaN only where skipped */
                            const float *wfp = mode == 1 ? wf : NULL;
                            const double *wdp = mode == 0 ? wd : NULL;
                            double got[256], want[256];
                            for (int x = 0; x < 256; x++) got[x] = want[x] = 0.25 * x - 3.0;
                            bs_rowsum(A, lds, m, wfp, wdp, skipz, c, dsh, x0 + c, x1 + c, got);
                            for (int i = 0; i < m; i++) {
                                if (skipz && mode < 2 && (mode == 0 ? wd[i] == 0.0 : wf[i] == 0.0f)) continue;
                                const float *r = A + (size_t)i * lds + (size_t)dsh * i;
                                for (int x = x0 + c; x < x1 + c; x++) {
                                    if (mode == 0)
                                        want[x] += r[x - c] * wd[i];
                                    else if (mode == 1)
                                        want[x] += r[x - c] * wf[i];
                                    else
                                        want[x] += r[x - c];
                                }
                            }
                            cr_assert(memcmp(got, want, sizeof got) == 0,
                                      "mode %d skipz %d dsh %d m %d [%d, %d)", mode, skipz, dsh, m, x0, x1);
                        }
    free(S);
    free(Sn);
}

/* bs_select_top (every token selector's top-k) leaves in c[0, k) exactly
 * the k entries a full sort by bs_cand_cmp puts first, and a permutation of
 * the input in c: scores with many ties (few distinct values), NaNs, sorted
 * and reversed inputs, n across the 16-entry insertion-sort cut-off. */
Test(block_score, select_top_is_the_sorted_prefix)
{
    static const int sizes[] = { 2, 16, 17, 100, 1023, 5000 };
    uint64_t seed = 7;
    int checked = 0;
    for (size_t a = 0; a < sizeof sizes / sizeof *sizes; a++)
        for (int kind = 0; kind < 5; kind++) {
            const int n = sizes[a];
            bs_cand *c = malloc((size_t)n * sizeof *c), *ref = malloc((size_t)n * sizeof *ref);
            cr_assert(c && ref);
            for (int i = 0; i < n; i++) {
                const double u = urand(&seed);
                double sc = kind == 0   ? u
                            : kind == 1 ? floor((u + 0.5) * 8.0) /* 8 distinct values: ties */
                            : kind == 2 ? (double)i              /* ascending */
                            : kind == 3 ? (double)(n - i)        /* descending */
                                        : (u > 0.3 ? NAN : u);   /* mostly NaN */
                c[i] = (bs_cand){ sc, i };
            }
            memcpy(ref, c, (size_t)n * sizeof *c);
            bs_sort_desc(ref, n);
            const int ks[] = { 1, 2, n / 10, n / 4, n / 2, n - 1 };
            for (size_t b = 0; b < sizeof ks / sizeof *ks; b++) {
                const int k = ks[b];
                if (k < 1) continue;
                bs_cand *w = malloc((size_t)n * sizeof *w);
                cr_assert(w);
                memcpy(w, c, (size_t)n * sizeof *c);
                bs_select_top(w, n, k);
                bs_sort_desc(w, k);
                for (int i = 0; i < k; i++)
                    cr_assert_eq(w[i].idx, ref[i].idx, "n %d k %d kind %d: entry %d is %d, want %d", n, k,
                                 kind, i, w[i].idx, ref[i].idx);
                /* still a permutation of the input */
                char *seen = calloc((size_t)n, 1);
                cr_assert(seen);
                bs_select_top(memcpy(w, c, (size_t)n * sizeof *c), n, k);
                for (int i = 0; i < n; i++) seen[w[i].idx]++;
                for (int i = 0; i < n; i++)
                    cr_assert_eq(seen[i], 1, "n %d k %d kind %d: index %d", n, k, kind, i);
                free(seen);
                free(w);
                checked++;
            }
            free(c);
            free(ref);
        }
    cr_expect(checked > 100);
}

/* bs_sort_desc (inline merge sort on ordered keys, or the radix sort for
 * ascending indices) gives exactly qsort's order under bs_cand_cmp and
 * keeps every score (-0 as +0): negative and positive scores, +-0, +-inf,
 * NaN, ties, shuffled and ascending indices, n across the 16-entry runs,
 * the merge passes and the radix cut-off. */
Test(block_score, sort_desc_is_the_comparator_order)
{
    static const int sizes[] = { 2, 3, 15, 16, 17, 33, 256, 1000, 4097, 8192, 10007 };
    uint64_t seed = 11;
    for (size_t a = 0; a < sizeof sizes / sizeof *sizes; a++)
        for (int kind = 0; kind < 8; kind++) {
            const int n = sizes[a];
            bs_cand *c = malloc((size_t)n * sizeof *c), *ref = malloc((size_t)n * sizeof *ref);
            cr_assert(c && ref);
            for (int i = 0; i < n; i++) {
                const double u = urand(&seed);
                const double specials[] = { 0.0, -0.0, INFINITY, -INFINITY, NAN, 1e-310, -1e300 };
                double sc = kind % 4 == 0   ? u * 2.0 - 1.0
                            : kind % 4 == 1 ? floor(u * 5.0) - 2.0 /* ties, negatives */
                            : kind % 4 == 2
                                ? specials[(int)(fabs(u) * 7.0) % 7]
                                : (u < 0 ? 1.0 : 1.0 + 0x1p-45); /* keys apart in one bit, a byte's top */
                /* kinds 0-3: indices a permutation, not in order (the
                 * merge sort); 4-7: ascending with gaps, as a scan of
                 * candidates gives them (from 256 keys, the radix sort) */
                c[i] = (bs_cand){ sc, kind < 4 ? (int32_t)(((int64_t)i * 7919) % n) : 3 * i + 1 };
            }
            memcpy(ref, c, (size_t)n * sizeof *c);
            qsort(ref, (size_t)n, sizeof *ref, bs_cand_cmp);
            bs_cand *two =
                malloc((size_t)n * sizeof *two); /* bs_sort_desc_par: halves side by side, merged */
            cr_assert(two);
            memcpy(two, c, (size_t)n * sizeof *c);
            bs_sort_desc(c, n);
            bs_sort_desc_par(two, n, 1);
            for (int i = 0; i < n; i++)
                cr_assert(two[i].idx == c[i].idx &&
                              memcmp(&two[i].score, &c[i].score, sizeof c[i].score) == 0,
                          "n %d kind %d: the split sort differs at %d", n, kind, i);
            free(two);
            for (int i = 0; i < n; i++) {
                cr_assert_eq(c[i].idx, ref[i].idx, "n %d kind %d: entry %d is %d, want %d", n, kind, i,
                             c[i].idx, ref[i].idx);
                cr_assert(isnan(ref[i].score) ? isnan(c[i].score) : c[i].score == ref[i].score,
                          "n %d kind %d: entry %d score %g, want %g", n, kind, i, c[i].score, ref[i].score);
            }
            free(c);
            free(ref);
        }
}

/* The first n of qsort with bs_cand_cmp (ties at the n-th score to the
 * lower indices, NaN last) against bs_top_ascending (candidates listed in
 * index order; kept in ascending index order) or, shuffled, bs_top_set
 * (candidates in any index order, negative indices too: the ties go to the
 * lowest indices, not to the first in the array): random, tied and special
 * scores, n from 0 past m; 33 keys and more take bs_key_nth's radix passes
 * before its quickselect. */
static void top_prefix_cases(uint64_t seed, int shuffled)
{
    static const int sizes[] = { 1, 2, 5, 16, 33, 100, 1000, 20000 };
    for (size_t a = 0; a < sizeof sizes / sizeof *sizes; a++)
        for (int kind = 0; kind < 4; kind++)
            for (int f = 0; f <= 5; f++) {
                const int m = sizes[a], n = f == 5 ? m + 3 : m * f / 4;
                bs_cand *c = malloc((size_t)m * sizeof *c), *ref = malloc((size_t)m * sizeof *ref);
                uint64_t *key = malloc((size_t)3 * m * sizeof *key);
                int32_t *perm = malloc((size_t)m * sizeof *perm);
                char *in = calloc((size_t)m, 1);
                cr_assert(c && ref && key && perm && in);
                for (int i = 0; i < m; i++) perm[i] = i;
                for (int i = m - 1; shuffled && i > 0; i--) {                      /* Fisher-Yates */
                    const int j = (int)((urand(&seed) + 0.5) * (i + 1)) % (i + 1); /* urand: [-0.5, 0.5) */
                    const int32_t t = perm[i];
                    perm[i] = perm[j];
                    perm[j] = t;
                }
                /* idx = 3 p + off, p the candidate's rank in index order */
                const int off = shuffled ? -m : 1;
                for (int i = 0; i < m; i++) {
                    const double u = urand(&seed);
                    const double specials[] = { 0.0, -0.0, INFINITY, -INFINITY, NAN, 1e-310, -1e300 };
                    const double sc = kind == 0   ? u * 2.0 - 1.0
                                      : kind == 1 ? floor(u * 3.0) - 1.0
                                      : kind == 2 ? specials[(int)(fabs(u) * 7.0) % 7]
                                                  : 0.5;
                    c[i] = (bs_cand){ sc, (int32_t)(3 * perm[i] + off) };
                }
                memcpy(ref, c, (size_t)m * sizeof *c);
                qsort(ref, (size_t)m, sizeof *ref, bs_cand_cmp);
                const int got = shuffled ? bs_top_set(c, m, n, key) : bs_top_ascending(c, m, n, key);
                const int want = n < m ? n : m;
                cr_assert_eq(got, want, "m %d n %d: returned %d", m, n, got);
                for (int i = 0; i < want; i++) in[(ref[i].idx - off) / 3] = 1;
                for (int i = 0; i < want; i++) {
                    cr_assert(in[(c[i].idx - off) / 3], "m %d n %d kind %d: %d kept, not in the first %d", m,
                              n, kind, c[i].idx, want);
                    in[(c[i].idx - off) / 3] = 0; /* each once */
                    cr_assert(shuffled || i == 0 || c[i].idx > c[i - 1].idx,
                              "m %d n %d kind %d: not ascending at %d", m, n, kind, i);
                }
                free(c);
                free(ref);
                free(key);
                free(perm);
                free(in);
            }
}

Test(block_score, top_ascending_is_the_comparator_prefix) { top_prefix_cases(23, 0); }

Test(block_score, top_set_is_the_comparator_prefix) { top_prefix_cases(29, 1); }

/* bs_keep_range and bs_pos_le (the vector compactions under bs_key_nth,
 * its radix passes and sea_proxy's top keys) against their scalar loops:
 * lengths across the vector width (4 or 8 keys, 16 positions), keys drawn
 * from a few values so ties and the bounds themselves occur, ranges that
 * wrap past 2^64, the bounds 0 and UINT64_MAX, and in place. */
Test(block_score, key_compaction_is_the_scalar_loop)
{
    uint64_t s = 77;
    static const int lens[] = { 0, 1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 33, 100, 1001 };
    for (int a = 0; a < NA(lens); a++)
        for (int kind = 0; kind < 3; kind++)
            for (int rep = 0; rep < 6; rep++) {
                const int m = lens[a];
                uint64_t *key = malloc(((size_t)m + 1) * sizeof *key),
                         *w = malloc(((size_t)m + 1) * sizeof *w);
                uint64_t *ref = malloc(((size_t)m + 1) * sizeof *ref);
                int32_t *pos = malloc(((size_t)m + 16) * sizeof *pos),
                        *pref = malloc(((size_t)m + 1) * sizeof *pref);
                cr_assert(key && w && ref && pos && pref);
                static const uint64_t few[] = {
                    0, 1, 5, 0x7fffffffffffffffull, 0x8000000000000000ull, 0xfffffffffffffffeull, UINT64_MAX
                };
                for (int i = 0; i < m; i++) {
                    const uint64_t u = (uint64_t)((urand(&s) + 0.5f) * 16777216.0f);
                    key[i] = kind == 0 ? few[u % 7] : kind == 1 ? u << 40 | u : (u % 5) << 61;
                }
                const uint64_t pick = m ? key[(size_t)((urand(&s) + 0.5f) * m) % m] : 0;
                const uint64_t base = rep == 0 ? 0 : rep == 1 ? pick : rep == 2 ? UINT64_MAX - 3 : pick - 7;
                const uint64_t span = rep == 0   ? pick
                                      : rep == 1 ? ((uint64_t)1 << 40) - 1
                                      : rep == 2 ? 9
                                      : rep == 3 ? 0
                                      : rep == 4 ? UINT64_MAX
                                                 : pick / 2;
                int want = 0;
                for (int i = 0; i < m; i++)
                    if (key[i] - base <= span) ref[want++] = key[i];
                const int got = bs_keep_range(key, m, base, span, w);
                cr_assert_eq(got, want, "keep m %d kind %d rep %d: %d kept, want %d", m, kind, rep, got,
                             want);
                cr_assert(!want || !memcmp(w, ref, (size_t)want * sizeof *w), "keep m %d kind %d rep %d", m,
                          kind, rep);
                memcpy(w, key, (size_t)m * sizeof *w); /* in place */
                cr_assert_eq(bs_keep_range(w, m, base, span, w), want);
                cr_assert(!want || !memcmp(w, ref, (size_t)want * sizeof *w), "in place m %d kind %d rep %d",
                          m, kind, rep);
                const uint64_t T = rep == 4 ? UINT64_MAX : rep == 3 ? 0 : pick;
                const int32_t p0 = rep * 1000 - 2500;
                int pw = 0;
                for (int i = 0; i < m; i++)
                    if (key[i] <= T) pref[pw++] = p0 + i;
                const int pg = bs_pos_le(key, m, T, p0, pos);
                cr_assert_eq(pg, pw, "pos m %d kind %d rep %d: %d, want %d", m, kind, rep, pg, pw);
                cr_assert(!pw || !memcmp(pos, pref, (size_t)pw * sizeof *pos), "pos m %d kind %d rep %d", m,
                          kind, rep);
                free(key);
                free(w);
                free(ref);
                free(pos);
                free(pref);
            }
    for (unsigned mk = 0; mk < 256; mk++) { /* bs_emit_bits8: every mask */
        int32_t out[12], want[8];
        int nw = 0;
        for (int u = 0; u < 8; u++)
            if (mk >> u & 1) want[nw++] = -7 + u;
        for (int u = 0; u < 12; u++) out[u] = 99;
        cr_assert_eq(bs_emit_bits8(out, 2, mk, -7), 2 + nw, "mask %u", mk);
        cr_assert(out[0] == 99 && out[1] == 99, "mask %u: wrote before n", mk);
        for (int u = 0; u < nw; u++) cr_assert_eq(out[2 + u], want[u], "mask %u lane %d", mk, u);
    }
}

/* anchor_core.h's float threshold: logit >= thr must be the double test
 * (double)logit + theta >= abar for every float, the ulps around the
 * threshold, the specials and overflowing differences included; and the
 * sixteen-lane emit must append exactly the set lanes, in order. */
Test(block_score, anchor_threshold_is_the_double_test)
{
    uint64_t seed = 7;
    const double abars[] = { 0.0,     -0.0,  1.0,      -3.25,     1e-30, 7.5e30,
                             -7.5e30, 1e300, INFINITY, -INFINITY, NAN,   3.4028234663852886e38 };
    const double thetas[] = { 0.0, 5.73263, -2.0, 1e-7, 1e20, 1e38, -1e38, 0.1 };
    for (int a = 0; a < NA(abars) + 400; a++)
        for (int t = 0; t < NA(thetas); t++) {
            const double theta = thetas[t];
            /* random anchors near 0, and near theta (where the double sum
             * rounds away many float ulps) */
            const double abar = a < NA(abars) ? abars[a]
                                : a % 2       ? urand(&seed) * 40.0
                                              : theta + urand(&seed) * 1e5;
            float thr;
            cr_assert(anc_thr(abar, theta, &thr), "abar %.17g theta %.17g: no threshold", abar, theta);
            const float base = (float)(abar - theta);
            float xs[64 + 8];
            int nx = 0;
            float x = base;
            for (int u = 0; u < 32; u++) x = nextafterf(x, -INFINITY);
            for (int u = 0; u < 64; u++, x = nextafterf(x, INFINITY)) xs[nx++] = x;
            const float sp[] = { INFINITY, -INFINITY, NAN, 0.0f, -0.0f, 3.4028235e38f, -3.4028235e38f, thr };
            for (int u = 0; u < 8; u++) xs[nx++] = sp[u];
            for (int u = 0; u < nx; u++)
                cr_assert_eq(xs[u] >= thr, (double)xs[u] + theta >= abar,
                             "abar %.17g theta %.17g x %.9g thr %.9g", abar, theta, xs[u], thr);
        }
    float no = 0.0f; /* a theta that is not finite keeps the double test */
    cr_assert(!anc_thr(1.0, NAN, &no) && !anc_thr(1.0, INFINITY, &no) && !anc_thr(1.0, -INFINITY, &no));
    for (int r = 0; r < 200; r++) {
        v16i keep;
        int32_t out[40], want[16];
        int nw = 0;
        for (int u = 0; u < 16; u++) {
            keep[u] = urand(&seed) > 0.1f ? -1 : 0;
            if (keep[u]) want[nw++] = 100 + u;
        }
        for (int u = 0; u < 40; u++) out[u] = -5;
        const int n = anc_emit(out, 3, &keep, 100);
        cr_assert_eq(n, 3 + nw);
        for (int u = 0; u < 3; u++) cr_assert_eq(out[u], -5);
        for (int u = 0; u < nw; u++) cr_assert_eq(out[3 + u], want[u]);
    }
}

/* lsh_codes_rounds gives every row the code a one-row call gives it (the
 * GEMM form) when it hashes many rows at once (the broadcast form under
 * AVX-512), and that code is the sequential scan's first maximum of [p,
 * -p] over the fp32 projections p (each an FMA chain in element order):
 * random rows, repeated rows (ties between rows), rows of zeros (every
 * projection 0), infinities and NaN; odd and even nb, one round and
 * several, head dims with and without a tail of the vector width. */
Test(block_score, lsh_codes_are_the_first_maximum)
{
    const int cases[][4] = { /* n, d, nb, R */
                             { 200, 64, 58, 2 }, { 130, 7, 7, 3 },   { 64, 128, 200, 1 }, { 97, 33, 2, 2 },
                             { 300, 16, 96, 4 }, { 150, 64, 66, 2 }, { 70, 20, 30, 2 },   { 90, 64, 48, 2 }
    };
    for (int t = 0; t < NA(cases); t++) {
        const int n = cases[t][0], d = cases[t][1], nb = cases[t][2], R = cases[t][3], b2 = (nb + 1) / 2;
        float *x = rnd((size_t)n * d, 41 + t), *rot = rnd((size_t)R * b2 * d, 43 + t);
        for (int c = 0; c < d; c++) {
            x[(size_t)5 * d + c] = x[(size_t)3 * d + c]; /* row 5 repeats row 3 */
            x[(size_t)7 * d + c] = 0.0f;                 /* row 7: all projections 0 */
        }
        x[(size_t)9 * d] = INFINITY;
        x[(size_t)11 * d] = -INFINITY;
        x[(size_t)13 * d + d / 2] = NAN;
        float *P = malloc(lsh_scratch_floats(R * b2) * sizeof *P);
        float *bt = malloc((size_t)(d > BS_KC ? d : BS_KC) * BS_PANEL * sizeof *bt);
        int32_t *all = malloc((size_t)R * n * sizeof *all), one[16];
        cr_assert(P && bt && all && R <= 16);
        lsh_codes_rounds(x, n, d, rot, R, b2, nb, P, lsh_scratch_floats(R * b2), bt, all, NULL, NULL);
        for (int i = 0; i < n; i++) {
            lsh_codes_rounds(x + (size_t)i * d, 1, d, rot, R, b2, nb, P, lsh_scratch_floats(R * b2), bt, one,
                             NULL, NULL);
            for (int r = 0; r < R; r++) {
                float p[256];
                for (int j = 0; j < b2; j++)
                    p[j] =
                        chain(rot + ((size_t)r * b2 + j) * d, 1, x + (size_t)i * d, 1, d, 1.0f, 1.0f, 0.0f);
                float bv = p[0];
                int32_t want = 0;
                for (int u = 1; u < nb; u++) {
                    const float v = u < b2 ? p[u] : -1.0f * p[u - b2];
                    if (v > bv) {
                        bv = v;
                        want = u;
                    }
                }
                cr_assert_eq(all[(size_t)r * n + i], want, "n %d d %d nb %d: row %d round %d: %d, scan %d", n,
                             d, nb, i, r, all[(size_t)r * n + i], want);
                cr_assert_eq(one[r], want, "n %d d %d nb %d: row %d round %d alone: %d, scan %d", n, d, nb, i,
                             r, one[r], want);
            }
        }
        free(x);
        free(rot);
        free(P);
        free(bt);
        free(all);
    }
}

/* bucket.h's fingerprint folded into the hashing (lsh_codes_rounds' seen,
 * chunk by chunk, Q then K per head) is bk_checksum's, on lengths and head
 * dims that leave a tail of floats, one head and several; and a changed
 * bit changes it. */
Test(block_score, folded_checksum_is_bk_checksum)
{
    const int shapes[][3] = { { 1, 1, 1 }, { 2, 65, 5 }, { 3, 130, 7 }, { 1, 200, 64 }, { 4, 64, 3 } };
    for (int t = 0; t < NA(shapes); t++) {
        const int H = shapes[t][0], n = shapes[t][1], d = shapes[t][2], nb = 6, b2 = 3, R = 2;
        const size_t per = (size_t)n * d;
        float *q = rnd(H * per, 11 + t), *k = rnd(H * per, 23 + t), *rot = rnd((size_t)R * b2 * d, 5);
        float *P = malloc(lsh_scratch_floats(R * b2) * sizeof *P);
        float *bt = malloc((size_t)(d > BS_KC ? d : BS_KC) * BS_PANEL * sizeof *bt);
        int32_t *code = malloc((size_t)R * n * sizeof *code);
        uint64_t *hs = malloc((size_t)H * sizeof *hs);
        cr_assert(P && bt && code && hs);
        for (int h = 0; h < H; h++) {
            bk_sum cs;
            bk_sum_init(&cs);
            bk_sum_ctx xq = { &cs, q + h * per, per }, xk = { &cs, k + h * per, per };
            lsh_codes_rounds(xq.x, n, d, rot, R, b2, nb, P, lsh_scratch_floats(R * b2), bt, code, bk_sum_seen,
                             &xq);
            lsh_codes_rounds(xk.x, n, d, rot, R, b2, nb, P, lsh_scratch_floats(R * b2), bt, code, bk_sum_seen,
                             &xk);
            hs[h] = bk_sum_head(&cs);
        }
        ab_problem pb;
        memset(&pb, 0, sizeof pb);
        pb.s.heads = H;
        pb.s.seq_len = n;
        pb.s.head_dim = d;
        pb.q = q;
        pb.k = k;
        const uint64_t want = bk_checksum(&pb);
        cr_assert_eq(bk_sum_heads(hs, H), want, "H %d n %d d %d", H, n, d);
        k[H * per - 1] = nextafterf(k[H * per - 1], 1.0f); /* the last float: the tail */
        cr_assert_neq(bk_checksum(&pb), want, "H %d n %d d %d: a changed bit kept the checksum", H, n, d);
        free(q);
        free(k);
        free(rot);
        free(P);
        free(bt);
        free(code);
        free(hs);
    }
}

/* mc_set_bits (keep.h) sets exactly the bits [a, b), over words it shares
 * with bits already set. */
Test(block_score, set_bits_is_the_bit_loop)
{
    for (int a = 0; a < 200; a += 7)
        for (int b = a; b <= 260; b += 5) {
            uint64_t got[6], want[6];
            for (int w = 0; w < 6; w++) got[w] = want[w] = 0x8000000000000001ull * (uint64_t)(w & 1);
            mc_set_bits(got, a, b);
            for (int j = a; j < b; j++) want[j >> 6] |= 1ull << (j & 63);
            cr_assert(memcmp(got, want, sizeof got) == 0, "[%d, %d)", a, b);
        }
}
