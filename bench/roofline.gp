# roofline.gp — results/bench/roofline.png from kernels_bench's kernels.tsv
# (and sdpa.tsv when the PyTorch peer ran): achieved GFLOP/s against N for
# OpenBLAS SGEMM on the same shapes (the roofline), flash (non-causal and
# causal), block-sparse at each density (effective: useful FLOPs kept over
# time), torch SDPA, and both on bf16 inputs (ab_cpu_flash_bf16's default
# path: AMX where the CPU has it); one panel per (head_dim, threads), non-causal unless
# marked. The machine's measured fp32 FMA peak for the panel's thread count
# (peak.tsv, when kernels_bench wrote it) is the grey horizontal line: the
# physical limit above every curve.
# Usage: gnuplot -e "dir='results/bench'" bench/roofline.gp
if (!exists("dir")) dir = "results/bench"
k = dir."/kernels.tsv"
s = dir."/sdpa.tsv"
have_sdpa = system("test -s ".s." && grep -q '^sdpa' ".s." && echo 1 || echo 0") + 0
have_sdpa16 = system("test -s ".s." && grep -q '^sdpa_bf16' ".s." && echo 1 || echo 0") + 0
have_bf16 = system("grep -q '^flash_bf16	' ".k." && echo 1 || echo 0") + 0
pk = dir."/peak.tsv"
have_peak = system("test -s ".pk." && echo 1 || echo 0") + 0
# the peak (GFLOP/s) for T threads, 0 when not measured
peak(T) = have_peak ? system(sprintf("awk -F'\t' '$1 !~ /^#/ && $2==%d {g=$3} END {print g+0}' %s", T, pk)) + 0 : 0
peak_isa = have_peak ? system("awk -F'\t' '$1 !~ /^#/ && $1!=\"isa\" {i=$1} END {print i}' ".pk) : ""
sel(file, kind, d, c, t) = sprintf("< awk -F'\t' '$1==\"%s\" && $3==%d && $5==%d && $6==%d' %s", kind, d, c, t, file)
seld(kind, d, c, t, dens) = sprintf("< awk -F'\t' '$1==\"%s\" && $3==%d && $5==%d && $6==%d && ($7-%g)^2<1e-9' %s", kind, d, c, t, dens, k)
dlist = system("awk -F'\t' '$1==\"flash\"{print $3}' ".k." | sort -nu | tr '\n' ' '")
tlist = system("awk -F'\t' '$1==\"flash\"{print $6}' ".k." | sort -nu | tr '\n' ' '")
nd = words(dlist); if (nd < 1) { print "roofline.gp: no flash rows in ".k; exit }
nt = words(tlist)
set terminal pngcairo size 560*nd, 500*nt font "sans,9"
set output dir."/roofline.png"
set multiplot layout nt, nd title "attnbench CPU kernels: achieved GFLOP/s (median; bars p10-p90), 8 heads"
set logscale x 2
set format x "%.0s%c"
set xlabel "N (sequence length)"
set ylabel "GFLOP/s"
set grid
set key below horizontal font ",7" maxcols 3 width -6
set yrange [0:*]
set offsets 0, 0, graph 0.08, 0   # room above the peak line
dens = "0.05 0.1 0.2 0.5 1"
do for [it = 1:nt] {
  do for [id = 1:nd] {
    D = word(dlist, id) + 0
    T = word(tlist, it) + 0
    P = peak(T)
    set title sprintf("d = %d, %d thread%s", D, T, T > 1 ? "s" : "")
    plot (P > 0 ? sel(k, "flash", D, 0, T) : "< true") u 2:(P) w l lw 2 dt 3 lc rgb "#7f7f7f" t (P > 0 ? sprintf("fp32 FMA peak, measured (%s): %.0f GFLOP/s", peak_isa, P) : ""), \
         sel(k, "sgemm", D, 0, T) u 2:13:14:15 w yerrorlines lw 2 lc rgb "black" t "OpenBLAS SGEMM (same shapes)", \
         sel(k, "flash", D, 0, T) u 2:13:14:15 w yerrorlines lw 2 lc rgb "#d62728" t "flash", \
         sel(k, "flash", D, 1, T) u 2:13:14:15 w yerrorlines lw 2 dt 2 lc rgb "#d62728" t "flash causal", \
         for [e = 1:words(dens)] seld("blocksparse", D, 0, T, word(dens, e) + 0) u 2:13 w lp pt 7 ps 0.5 lc e+2 t sprintf("blocksparse %g%% (effective)", 100 * word(dens, e)), \
         (have_sdpa ? sel(s, "sdpa", D, 0, T) : "< true") u 2:13:14:15 w yerrorlines lw 2 lc rgb "#1f77b4" t (have_sdpa ? "torch SDPA" : ""), \
         (have_bf16 ? sel(k, "flash_bf16", D, 0, T) : "< true") u 2:13:14:15 w yerrorlines lw 2 lc rgb "#9467bd" t (have_bf16 ? "flash, bf16 inputs" : ""), \
         (have_sdpa16 ? sel(s, "sdpa_bf16", D, 0, T) : "< true") u 2:13:14:15 w yerrorlines lw 2 dt 4 lc rgb "#1f77b4" t (have_sdpa16 ? "torch SDPA, bf16" : "")
  }
}
unset multiplot
