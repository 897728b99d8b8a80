# overhead_share.gp — share of each call spent deciding what to compute
# (select_ms / total_ms) vs sequence length, one line per method at its
# density closest to 10%. Points of the file's primary device only;
# methods with a dense layout (nothing to select) are left out by export.
# Data: DATADIR/overhead_share.tsv (attnbench export). Style: common.gp.
if (!exists("plotsdir")) plotsdir = 'plots'
load plotsdir.'/common.gp'

if (!exists("datafile")) datafile = datadir.'/overhead_share.tsv'
ncol = 7; icol = 8
eval scan_blocks

# one sequence length only: an x range around it (else gnuplot warns "empty x range")
stats datafile using 1 nooutput
if (STATS_min == STATS_max) { set xrange [STATS_min / 1.5 : STATS_max * 1.5] }
set logscale x 2
set yrange [0:105]
set ytics 0, 20, 100
set format y '%g%%'
set xlabel 'sequence length N (tokens)'
set ylabel 'select() share of latency'
set title 'Selector overhead: select / (select + run) (density ~10%)' . mtitle_line
set offsets graph 0.04, graph 0.04, 0, 0
plot for [i=1:nblocks] datafile index (i-1) using 1:(100.0 * $2):xtic(ntics($1)) \
     with linespoints lc rgb bcolor(i) pt bpoint(i) dt bdash(i) title word(names, i)
