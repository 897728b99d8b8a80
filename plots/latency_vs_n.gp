# latency_vs_n.gp — latency per attention call vs sequence length, log-log,
# one line per method (at its density closest to 10%); error bars: the 95%
# interval of the median (hierarchical bootstrap over rounds and samples,
# columns 13-14), or p10-p90 of the repeats for files written before the
# timing protocol (no interval). Points without a timing are left out by
# export.
# The exact references are "dense" (the shared tiled kernel) and, when the
# sweep ran it, "dense_blas" (row-blocked OpenBLAS SGEMM, the BLAS reference
# in place of a roofline: the file holds no measured SGEMM peak); both are
# drawn thicker. Points of the file's primary device only (cpu_vs_gpu.gp
# compares devices).
# Data: DATADIR/latency_vs_n.tsv (attnbench export). Style: common.gp.
if (!exists("plotsdir")) plotsdir = 'plots'
load plotsdir.'/common.gp'

if (!exists("datafile")) datafile = datadir.'/latency_vs_n.tsv'
ncol = 8; icol = 9
eval scan_blocks
dev = ''
stats datafile index 0 every ::0::0 using (dev = strcol(10), 0) nooutput
isref(i) = (word(names, i) eq 'dense' || word(names, i) eq 'dense_blas')

# one sequence length only: an x range around it (else gnuplot warns "empty x range")
stats datafile using 1 nooutput
if (STATS_min == STATS_max) { set xrange [STATS_min / 1.5 : STATS_max * 1.5] }
# the bars: 95% intervals when any row has one, else p10-p90 (one kind per
# figure); a bar needs both ends positive (log scale)
bar_ok(a, b) = (valid(a) && valid(b) && column(a) > 0 && column(b) > 0)
stats datafile using (bar_ok(13, 14) ? 1 : 0) nooutput
hasci = (STATS_sum > 0)
blo = hasci ? 13 : 3
bhi = hasci ? 14 : 4
stats datafile using (bar_ok(blo, bhi) ? 1 : 0) nooutput
hasbars = (STATS_sum > 0)
bars = hasci ? 'bars: 95% interval (bootstrap over rounds)' : (hasbars ? 'bars: p10-p90 of the repeats' : '')
# y range over the medians and the bars; one value only: a range around it
stats datafile using 2 nooutput
ylo = STATS_min
yhi = STATS_max
if (hasbars) {
    stats datafile using (bar_ok(blo, bhi) ? column(blo) : NaN) nooutput
    ylo = (STATS_min < ylo) ? STATS_min : ylo
    stats datafile using (bar_ok(blo, bhi) ? column(bhi) : NaN) nooutput
    yhi = (STATS_max > yhi) ? STATS_max : yhi
}
if (ylo == yhi) { set yrange [ylo / 2 : yhi * 2] }
set logscale x 2
set logscale y 10
set format y '%g'
set xlabel 'sequence length N (tokens)'
set ylabel sprintf('latency per call (ms, %s)', dev)
set title 'Latency vs sequence length (density ~10%; median)' . ((bars eq '') ? '' : "\n" . bars) . mtitle_line
set offsets graph 0.04, graph 0.04, 0, 0
plot for [i=1:nblocks] datafile index (i-1) using 1:2:xtic(ntics($1)) \
     with linespoints lc rgb bcolor(i) pt bpoint(i) dt bdash(i) lw (isref(i) ? 2.2 : 1) \
     title word(names, i) . (isref(i) ? ' (exact)' : ''), \
     for [i=1:nblocks] datafile index (i-1) using 1:(bar_ok(blo, bhi) ? $2 : NaN):(column(blo)):(column(bhi)) \
     with yerrorbars lc rgb bcolor(i) pt bpoint(i) lw (isref(i) ? 2.2 : 1) notitle
