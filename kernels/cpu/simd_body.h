/* simd_body.h — the vectorised online-softmax chunk step (FlashAttention-2,
 * Dao 2023), written once over a small set of vector macros and included by
 * simd_avx512.c and simd_avx2.c, which define the macros for their ISA
 * inside a `#pragma GCC target` region. Not a standalone header.
 *
 * The tile layout is in tile.h: qt = scale * Q^T (d, ld), st = S^T (nk, ld),
 * acc (nq, dp). One chunk is three passes:
 *   1. st = K qt: register tiles of SB_R key rows x SB_NV query vectors,
 *      a broadcast key element times a loaded query vector per FMA; each
 *      tile masks its logits before it stores them (masked == 1: the
 *      column range [lo[r], lim[r]) of each row; masked == 2: the element
 *      map em) and folds them into each query lane's max over the chunk;
 *   2. softmax, lane-wise over query rows, from that max: running max,
 *      alpha = exp(m_old - m_new), p = exp(s - m_new), row sums (the bf16
 *      step, whose logits come from elsewhere, masks and takes the max
 *      here: apply_em, masked_max);
 *   3. acc = alpha acc + P V: register tiles of SB_R query rows x PV_NX
 *      head_dim vectors, a broadcast P^T entry times a loaded value vector;
 *      the last head_dim vector is a masked load when d % W != 0.
 * Every micro-kernel takes its tile extents as compile-time constants
 * (always_inline + constant arguments), so the accumulators live in
 * registers.
 *
 * The including file defines: VT (vector type), W (floats per vector), SFX
 * (name suffix), VZERO(), VSET1(x), VLOAD(p) (aligned), VLOADU(p),
 * VLOADU_TAIL(p, n) (first n lanes, rest 0), VSTORE(p, v) (aligned),
 * VFMA(a, b, c) = a*b + c, VMUL, VADD, VSUB, VMAX, VEXP(v) (optionally
 * VEXP_NP(v): the same bits for v <= 0, which the softmax pass uses),
 * VMASK_LIM(s, limp, c) (lanes whose lim <= c become -inf),
 * VMASK_LO(s, lop, c) (lanes whose lo > c become -inf), VMASK_EM(s, ep)
 * (lanes whose map byte is 0 become -inf), VZERO_IF_NEGINF(v), and SB_R,
 * SB_NV, PV_NX (register tile sizes); optionally PV_COPY (1: a gathered
 * chunk's value rows are copied into the tile's vp before pass 3, see
 * F(pv_copy)). */

#define AB_CAT_(a, b) a##_##b
#define AB_CAT(a, b)  AB_CAT_(a, b)
#define F(name)       AB_CAT(name, SFX)
#define AI            static inline __attribute__((always_inline))
#ifndef PV_COPY
#define PV_COPY 0
#endif
#ifndef VEXP_NP
#define VEXP_NP(v) VEXP(v)
#endif

/* VPIN(v): keep a loaded vector in a register. Without it GCC folds the
 * load of a tile's shared operand into every FMA that reads it (qk_tile's
 * query vectors: R loads where one does; pv_tile's value vectors alike),
 * and the loops run on the load ports, not the FMA units. An empty asm
 * statement the vector passes through: no instruction, same arithmetic. */
#ifndef VPIN
#define VPIN(v) __asm__("" : "+v"(v))
#endif

/* st[i][0 : NV*W] = sum_x k[i][x] qt[x][0 : NV*W] for i < R. G: key row i
 * is kr[i] (a gathered chunk read in place), else k + i d. The chunk's
 * mask is applied before the store: em (masked == 2: the element map's
 * rows for these keys), or lim and lo (masked == 1: the lanes' column
 * ranges; these keys are columns c0 .. c0 + R - 1). cmx: the lanes' max. */
AI void F(qk_tile)(const int R, const int NV, const int G, const float *restrict k,
                   const float *const *restrict kr, int d, const float *restrict qt, float *restrict st,
                   const int ld, VT *restrict cmx, const unsigned char *restrict em,
                   const int32_t *restrict lo, const int32_t *restrict lim, int c0)
{
    VT acc[SB_R][SB_NV];
    for (int i = 0; i < R; i++)
        for (int j = 0; j < NV; j++) acc[i][j] = VZERO();
    for (int x = 0; x < d; x++) {
        VT qv[SB_NV];
        for (int j = 0; j < NV; j++) {
            qv[j] = VLOAD(qt + (size_t)x * ld + j * W);
            VPIN(qv[j]);
        }
        for (int i = 0; i < R; i++) {
            const VT kb = VSET1(G ? kr[i][x] : k[(size_t)i * d + x]);
            for (int j = 0; j < NV; j++) acc[i][j] = VFMA(kb, qv[j], acc[i][j]);
        }
    }
    if (em) { /* masked == 2: the element map applied in registers */
        const VT ninf = VSET1(-INFINITY);
        for (int i = 0; i < R; i++)
            for (int j = 0; j < NV; j++) acc[i][j] = VMASK_EM(acc[i][j], em + (size_t)i * ld + j * W, ninf);
    }
    if (lim) { /* masked == 1: masked_max's two masks, in its order */
        const VT ninf = VSET1(-INFINITY);
        for (int i = 0; i < R; i++)
            for (int j = 0; j < NV; j++) {
                acc[i][j] = VMASK_LIM(acc[i][j], lim + j * W, c0 + i, ninf);
                acc[i][j] = VMASK_LO(acc[i][j], lo + j * W, c0 + i, ninf);
            }
    }
    for (int i = 0; i < R; i++)
        for (int j = 0; j < NV; j++) VSTORE(st + (size_t)i * ld + j * W, acc[i][j]);
    for (int j = 0; j < NV; j++) {
        VT m = acc[0][j];
        for (int i = 1; i < R; i++) m = VMAX(m, acc[i][j]);
        cmx[j] = VMAX(cmx[j], m);
    }
}

/* One row block of pass 1 for all column blocks of NV vectors (nv total). */
AI void F(qk_rows)(const int R, const int G, const float *restrict k, const float *const *restrict kr, int d,
                   const float *restrict qt, float *restrict st, int nv, const int ld, VT *restrict cmx,
                   const unsigned char *restrict em, const int32_t *restrict lo, const int32_t *restrict lim,
                   int c0)
{
    for (int j0 = 0; j0 < nv; j0 += SB_NV) {
        const int n = nv - j0 < SB_NV ? nv - j0 : SB_NV;
        const float *q = qt + j0 * W;
        float *s = st + j0 * W;
        switch (n) {
        case 1:
            F(qk_tile)
            (R, 1, G, k, kr, d, q, s, ld, cmx + j0, em ? em + j0 * W : NULL, lo + j0 * W,
             lim ? lim + j0 * W : NULL, c0);
            break;
#if SB_NV >= 2
        case 2:
            F(qk_tile)
            (R, 2, G, k, kr, d, q, s, ld, cmx + j0, em ? em + j0 * W : NULL, lo + j0 * W,
             lim ? lim + j0 * W : NULL, c0);
            break;
#endif
#if SB_NV >= 3
        case 3:
            F(qk_tile)
            (R, 3, G, k, kr, d, q, s, ld, cmx + j0, em ? em + j0 * W : NULL, lo + j0 * W,
             lim ? lim + j0 * W : NULL, c0);
            break;
#endif
#if SB_NV >= 4
        case 4:
            F(qk_tile)
            (R, 4, G, k, kr, d, q, s, ld, cmx + j0, em ? em + j0 * W : NULL, lo + j0 * W,
             lim ? lim + j0 * W : NULL, c0);
            break;
#endif
        }
    }
}

/* acc[i][0 : NX*W] = alpha[i] acc[i] + sum_c st[c][i] v[c][0 : NX*W], i < R.
 * TAIL: the last vector holds only `tail` valid head_dim entries. G: value
 * row c is vr[c] + xo (a gathered chunk read in place), else v + c d. */
AI void F(pv_tile)(const int R, const int NX, const int TAIL, const int G, const float *restrict st,
                   const float *restrict v, const float *const *restrict vr, int xo, int d, int nk,
                   float *restrict acc, int dp, const float *restrict alpha, int tail, const int ld)
{
    VT a[SB_R][PV_NX];
    for (int i = 0; i < R; i++) {
        const VT al = VSET1(alpha[i]);
        for (int j = 0; j < NX; j++) a[i][j] = VMUL(VLOAD(acc + (size_t)i * dp + j * W), al);
    }
    for (int c = 0; c < nk; c++) {
        VT vv[PV_NX];
        const float *vc = G ? vr[c] + xo : v + (size_t)c * d;
        for (int j = 0; j < NX; j++) {
            vv[j] = (TAIL && j == NX - 1) ? VLOADU_TAIL(vc + j * W, tail) : VLOADU(vc + j * W);
            VPIN(vv[j]);
        }
        for (int i = 0; i < R; i++) {
            const VT p = VSET1(st[(size_t)c * ld + i]);
            for (int j = 0; j < NX; j++) a[i][j] = VFMA(p, vv[j], a[i][j]);
        }
    }
    for (int i = 0; i < R; i++)
        for (int j = 0; j < NX; j++) VSTORE(acc + (size_t)i * dp + j * W, a[i][j]);
}

AI void F(pv_nx)(const int R, const int TAIL, const int G, int nx, const float *st, const float *v,
                 const float *const *vr, int xo, int d, int nk, float *acc, int dp, const float *alpha,
                 int tail, const int ld)
{
    switch (nx) {
    case 1: F(pv_tile)(R, 1, TAIL, G, st, v, vr, xo, d, nk, acc, dp, alpha, tail, ld); break;
#if PV_NX >= 2
    case 2: F(pv_tile)(R, 2, TAIL, G, st, v, vr, xo, d, nk, acc, dp, alpha, tail, ld); break;
#endif
#if PV_NX >= 3
    case 3: F(pv_tile)(R, 3, TAIL, G, st, v, vr, xo, d, nk, acc, dp, alpha, tail, ld); break;
#endif
#if PV_NX >= 4
    case 4: F(pv_tile)(R, 4, TAIL, G, st, v, vr, xo, d, nk, acc, dp, alpha, tail, ld); break;
#endif
    }
}

/* One row block of pass 3 over all of head_dim. */
AI void F(pv_rows)(const int R, const int G, const float *st, const float *v, const float *const *vr, int d,
                   int nk, float *acc, int dp, const float *alpha, const int ld)
{
    const int nxv = (d + W - 1) / W, tail = d - (nxv - 1) * W;
    for (int x0 = 0; x0 < nxv; x0 += PV_NX) {
        const int nx = nxv - x0 < PV_NX ? nxv - x0 : PV_NX;
        const float *vx = G ? NULL : v + x0 * W;
        float *ax = acc + x0 * W;
        if (x0 + nx == nxv && tail != W)
            F(pv_nx)(R, 1, G, nx, st, vx, vr, x0 * W, d, nk, ax, dp, alpha, tail, ld);
        else
            F(pv_nx)(R, 0, G, nx, st, vx, vr, x0 * W, d, nk, ax, dp, alpha, W, ld);
    }
}

/* Pass 2 on st (nk, ld): mask (masked == 1: the column range [lo[r],
 * lim[r]) of each row; masked == 2: the element map em), running max,
 * alpha = exp(m_old - m_new), p = exp(s - m_new) in place, row sums. */
/* masked == 2 (the element map of a non-interval base mask): -inf where
 * em is 0, in place. */
AI void F(apply_em)(ab_tile *t, int nk)
{
    for (int cc = 0; cc < nk; cc++) {
        const unsigned char *e = t->em + (size_t)cc * t->ld;
        float *s = t->st + (size_t)cc * t->ld;
        for (int r = 0; r < t->nq; r++)
            if (!e[r]) s[r] = -INFINITY;
    }
}

/* The max over the nk logits of query vector j (sj = st + j W), starting
 * from mx; masked == 1 first sets the columns outside [lo[r], lim[r]) to
 * -inf in place. */
AI VT F(masked_max)(const ab_tile *t, float *sj, int j, int nk, int masked, VT mx)
{
    const int ld = t->ld;
    if (masked) {
        const VT ninf = VSET1(-INFINITY);
        const int32_t *limp = t->lim + j * W, *lop = t->lo + j * W;
        for (int cc = 0; cc < nk; cc++) {
            VT s = VLOAD(sj + (size_t)cc * ld);
            s = VMASK_LIM(s, limp, cc, ninf);
            s = VMASK_LO(s, lop, cc, ninf);
            VSTORE(sj + (size_t)cc * ld, s);
            mx = VMAX(mx, s);
        }
    } else {
        for (int cc = 0; cc < nk; cc++) mx = VMAX(mx, VLOAD(sj + (size_t)cc * ld));
    }
    return mx;
}

/* cmx: each query vector's max over the chunk's logits, already masked
 * (the fp32 step's pass 1; masked is then 0), or NULL: the pass applies
 * the mask and takes the max itself (the bf16 step). */
AI void F(softmax_pass)(ab_tile *t, int nk, int masked, const VT *cmx)
{
    const int nq = t->nq, ld = t->ld;
    const int nv = (nq + W - 1) / W;
    float *restrict st = t->st;
    if (masked == 2) {
        F(apply_em)(t, nk);
        masked = 0;
    }
    const VT ninf = VSET1(-INFINITY);
    for (int j = 0; j < nv; j++) {
        float *sj = st + j * W;
        const VT mold = VLOAD(t->m + j * W);
        const VT mx = cmx ? VMAX(mold, cmx[j]) : F(masked_max)(t, sj, j, nk, masked, mold);
        const VT muse = VZERO_IF_NEGINF(mx, ninf);
        const VT alpha = VEXP_NP(VSUB(mold, muse)); /* <= 0: mold <= mx */
        VT sum = VZERO();
        for (int cc = 0; cc < nk; cc++) {
            const VT p = VEXP_NP(VSUB(VLOAD(sj + (size_t)cc * ld), muse)); /* <= 0, or -inf */
            VSTORE(sj + (size_t)cc * ld, p);
            sum = VADD(sum, p);
        }
        VSTORE(t->l + j * W, VFMA(VLOAD(t->l + j * W), alpha, sum));
        VSTORE(t->m + j * W, mx);
        VSTORE(t->alpha + j * W, alpha);
    }
}

/* Prefetches rows [a, b) of the list r (d floats each) towards L2, every
 * 64-byte line (every other line, leaving the rest to the adjacent-line
 * prefetcher, was slower). */
AI void F(prefetch_rows)(const float *const *r, int a, int b, int d)
{
    for (int i = a; i < b; i++)
        for (int x = 0; x < d; x += 16) __builtin_prefetch(r[i] + x, 0, 2);
}

/* Pass 3, acc = alpha acc + P V, over the chunk's nk value rows (G: the
 * row list vr, else contiguous from v); the next chunk's value rows
 * (t->pfv) prefetched in step, pfn / nq of them per query row. */
AI void F(pv_pass)(const int G, ab_tile *t, const float *v, const float *const *vr, int nk)
{
    const int d = t->d, dp = t->dp, nq = t->nq, ld = t->ld, pfn = t->pfn;
    const float *restrict st = t->st;
    int r = 0, pv = 0;
    for (; r + SB_R <= nq; r += SB_R) {
        if (pv < pfn) {
            const int e = (int)((int64_t)pfn * (r + SB_R) / nq);
            F(prefetch_rows)(t->pfv, pv, e, d);
            pv = e;
        }
        F(pv_rows)(SB_R, G, st + r, v, vr, d, nk, t->acc + (size_t)r * dp, dp, t->alpha + r, ld);
    }
    if (pv < pfn) F(prefetch_rows)(t->pfv, pv, pfn, d);
    switch (nq - r) {
    case 0: break;
    case 1: F(pv_rows)(1, G, st + r, v, vr, d, nk, t->acc + (size_t)r * dp, dp, t->alpha + r, ld); break;
#if SB_R >= 3
    case 2: F(pv_rows)(2, G, st + r, v, vr, d, nk, t->acc + (size_t)r * dp, dp, t->alpha + r, ld); break;
#endif
#if SB_R >= 4
    case 3: F(pv_rows)(3, G, st + r, v, vr, d, nk, t->acc + (size_t)r * dp, dp, t->alpha + r, ld); break;
#endif
#if SB_R >= 5
    case 4: F(pv_rows)(4, G, st + r, v, vr, d, nk, t->acc + (size_t)r * dp, dp, t->alpha + r, ld); break;
#endif
#if SB_R >= 6
    case 5: F(pv_rows)(5, G, st + r, v, vr, d, nk, t->acc + (size_t)r * dp, dp, t->alpha + r, ld); break;
#endif
    }
}

/* The nk value rows vr[] of a gathered chunk copied into vp (nk, d), for
 * F(pv_pass) to read contiguously (PV_COPY). Pass 3 reads each value row
 * once per block of SB_R query rows; rows read in place from scattered
 * addresses missed L1 on every block, since the hardware prefetcher cannot
 * follow the list, and on a Zen 3 (AVX2, 32 KiB L1) the loads of those
 * rows were about a quarter of the gather kernel's time (2026-12-07). */
AI void F(pv_copy)(float *restrict vp, const float *const *vr, int nk, int d)
{
/* vector moves, not memcpy: GCC called the library for the 256-byte rows */
#define AB_PV_COPY(D)                                               \
    for (int c = 0; c < nk; c++) {                                  \
        float *restrict o = vp + (size_t)c * (D);                   \
        const float *restrict x = vr[c];                            \
        int e = 0;                                                  \
        for (; e + W <= (D); e += W) VSTOREU(o + e, VLOADU(x + e)); \
        for (; e < (D); e++) o[e] = x[e];                           \
    }
    switch (d) {
    case 64: AB_PV_COPY(64) break;
    case 128: AB_PV_COPY(128) break;
    default: AB_PV_COPY(d) break;
    }
#undef AB_PV_COPY
}

/* The chunk step on contiguous rows k, v (G = 0) or on the row lists kr,
 * vr (G = 1). Either prefetches the next chunk's rows (t->pfk, t->pfv:
 * t->pfn of them, 0: none), spread over the passes, so that they arrive
 * while this chunk computes: a burst of them before the chunk had each
 * wait for a free fill buffer. The gathered chunks list the next ones'
 * rows; the block-sparse kernel the next block's, where the hardware
 * prefetcher, which follows a block's rows, cannot see the jump. */
AI void F(chunk_body)(const int G, ab_tile *t, const float *k, const float *v, const float *const *kr,
                      const float *const *vr, int nk, int masked)
{
    const int d = t->d, nq = t->nq, ld = t->ld;
    const int nv = (nq + W - 1) / W; /* query vectors; lanes >= nq are padding */
    float *restrict st = t->st;      /* (nk, ld) */
    const int pfn = t->pfn;
    /* pass 1 applies the chunk's mask (masked == 1: the lanes' column
     * ranges lo, lim; 2: the element map em) to the logits as it stores
     * them, and keeps their max: the softmax has neither to do */
    const unsigned char *em = masked == 2 ? t->em : NULL;
    const int32_t *lim = masked == 1 ? t->lim : NULL;
    VT cmx[AB_TILE_Q / W]; /* each query lane's max logit over the chunk, kept by pass 1 */
    for (int j = 0; j < nv; j++) cmx[j] = VSET1(-INFINITY);

    /* 1. S^T = K (scale Q)^T; the next chunk's key rows prefetched in step */
    int c = 0;
    for (; c + SB_R <= nk; c += SB_R) {
        if (c < pfn) F(prefetch_rows)(t->pfk, c, c + SB_R < pfn ? c + SB_R : pfn, d);
        F(qk_rows)
        (SB_R, G, G ? NULL : k + (size_t)c * d, G ? kr + c : NULL, d, t->qt, st + (size_t)c * ld, nv, ld, cmx,
         em ? em + (size_t)c * ld : NULL, t->lo, lim, c);
    }
    if (c < pfn) F(prefetch_rows)(t->pfk, c, pfn, d);
    const unsigned char *emc = em ? em + (size_t)c * ld : NULL;
    const float *kc = G ? NULL : k + (size_t)c * d;
    const float *const *krc = G ? kr + c : NULL;
    switch (nk - c) {
    case 0: break;
    case 1: F(qk_rows)(1, G, kc, krc, d, t->qt, st + (size_t)c * ld, nv, ld, cmx, emc, t->lo, lim, c); break;
#if SB_R >= 3
    case 2: F(qk_rows)(2, G, kc, krc, d, t->qt, st + (size_t)c * ld, nv, ld, cmx, emc, t->lo, lim, c); break;
#endif
#if SB_R >= 4
    case 3: F(qk_rows)(3, G, kc, krc, d, t->qt, st + (size_t)c * ld, nv, ld, cmx, emc, t->lo, lim, c); break;
#endif
#if SB_R >= 5
    case 4: F(qk_rows)(4, G, kc, krc, d, t->qt, st + (size_t)c * ld, nv, ld, cmx, emc, t->lo, lim, c); break;
#endif
#if SB_R >= 6
    case 5: F(qk_rows)(5, G, kc, krc, d, t->qt, st + (size_t)c * ld, nv, ld, cmx, emc, t->lo, lim, c); break;
#endif
    }

    /* 2. online softmax, lane-wise over query rows */
    F(softmax_pass)(t, nk, 0, cmx);

    /* 3. acc = alpha acc + P V */
    if (G && PV_COPY) { /* the value rows copied first (F(pv_copy)): pass 3 on contiguous rows */
        F(pv_copy)(t->vp, vr, nk, d);
        F(pv_pass)(0, t, t->vp, NULL, nk);
    } else {
        F(pv_pass)(G, t, v, vr, nk);
    }
}

void F(ab_chunk)(ab_tile *t, const float *k /* (nk, d) */, const float *v /* (nk, d) */, int nk, int masked)
{
    F(chunk_body)(0, t, k, v, NULL, NULL, nk, masked);
}

void F(ab_chunk_rows)(ab_tile *t, const float *const *kr, const float *const *vr, int nk, int masked)
{
    F(chunk_body)(1, t, NULL, NULL, kr, vr, nk, masked);
}

/* x[i] = exp(x[i] - shift) in place for i < n; returns the sum. Lanes
 * accumulate in fp32 for at most 64 vectors before the running total moves
 * to fp64, so the sum is as exact as a scalar fp64 loop to ~1e-7. np: the
 * arguments are known to be at most 0 (shift a row's max), so the softmax
 * pass's exp (VEXP_NP) gives the same bits. */
AI double F(exp_sum_body)(float *x, int n, float shift, const int np)
{
    const VT sh = VSET1(shift);
    double sum = 0;
    int i = 0;
    while (i + W <= n) {
        VT acc = VZERO();
        for (int k = 0; k < 64 && i + W <= n; k++, i += W) {
            const VT a = VSUB(VLOADU(x + i), sh);
            const VT p = np ? VEXP_NP(a) : VEXP(a);
            VSTOREU(x + i, p);
            acc = VADD(acc, p);
        }
        float lanes[W];
        VSTOREU(lanes, acc);
        for (int k = 0; k < W; k++) sum += lanes[k];
    }
    for (; i < n; i++) {
        const float p = expf(x[i] - shift);
        x[i] = p;
        sum += p;
    }
    return sum;
}

double F(ab_exp_shift_sum)(float *x, int n, float shift) { return F(exp_sum_body)(x, n, shift, 0); }

/* ab_exp_shift_sum for mx >= every x[i] (NaN aside): the arguments are
 * never positive, the same bits */
double F(ab_exp_max_sum)(float *x, int n, float mx) { return F(exp_sum_body)(x, n, mx, 1); }

/* ab_exp_shift_sum's values without the sum: the same x[i], element for
 * element (vector exp on the whole vectors, expf on the tail). For callers
 * that drop the sum: on a row of 64 the lanes' reduction to double was most
 * of the call (scatterbrain's feature rows and tiles, 2026-12-07). */
void F(ab_exp_shift)(float *x, int n, float shift)
{
    const VT sh = VSET1(shift);
    int i = 0;
    for (; i + W <= n; i += W) VSTOREU(x + i, VEXP(VSUB(VLOADU(x + i), sh)));
    for (; i < n; i++) x[i] = expf(x[i] - shift);
}

#undef AI
#undef F
#undef AB_CAT
#undef AB_CAT_
