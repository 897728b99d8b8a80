# latency_vs_n.gp — latency per attention call vs sequence length, log-log,
# one line per method (at its density closest to 10%), p10-p90 as error bars.
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
set logscale x 2
set logscale y 10
set format y '%g'
set xlabel 'sequence length N (tokens)'
set ylabel sprintf('latency per call (ms, %s)', dev)
set title 'Latency vs sequence length (density ~10%; median, p10-p90 bars)' . mtitle_line
set offsets graph 0.04, graph 0.04, 0, 0
plot for [i=1:nblocks] datafile index (i-1) using 1:2:3:4:xtic(ntics($1)) \
     with yerrorlines lc rgb bcolor(i) pt bpoint(i) dt bdash(i) lw (isref(i) ? 2.2 : 1) \
     title word(names, i) . (isref(i) ? ' (exact)' : '')
