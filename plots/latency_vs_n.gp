# latency_vs_n.gp — latency per attention call vs sequence length, log-log,
# one line per method (at its density closest to 10%), p10-p90 as error bars.
# Data: DATADIR/latency_vs_n.tsv (attnbench export). Style: common.gp.
if (!exists("plotsdir")) plotsdir = 'plots'
load plotsdir.'/common.gp'

datafile = datadir.'/latency_vs_n.tsv'
ncol = 8; icol = 9
eval scan_blocks

set logscale xy 2
set logscale y 10
set format y '%g'
set xlabel 'sequence length N (tokens)'
set ylabel 'latency per call (ms)'
set title 'Latency vs sequence length (median, p10-p90 bars; density ~10%)'
set offsets graph 0.04, graph 0.04, 0, 0
plot for [i=1:nblocks] datafile index (i-1) using 1:2:3:4:xtic(ntics($1)) \
     with yerrorlines lc rgb bcolor(i) pt bpoint(i) dt bdash(i) title word(names, i)
