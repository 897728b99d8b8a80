# decode_latency.gp — decode: latency per step vs KV-cache length, log-log,
# one line per method at its setting closest to 1/16 of the cache (methods
# without a knob: all of it). Black dashed: the memory-bandwidth limit of
# dense decode, the whole K and V cache read once at the STREAM triad
# bandwidth measured when the file was written (env stream_triad_gbs).
# Bars: 95% interval of the median (bootstrap over rounds).
# Data: DATADIR/decode_latency.tsv (attnbench export). Style: common.gp.
if (!exists("plotsdir")) plotsdir = 'plots'
load plotsdir.'/common.gp'

if (!exists("datafile")) datafile = datadir.'/decode_latency.tsv'
ncol = 8; icol = 9
eval scan_blocks
stats datafile using 1 nooutput
if (STATS_min == STATS_max) { set xrange [STATS_min / 1.5 : STATS_max * 1.5] }
set logscale x 2
set logscale y 10
set format y '%g'
set xlabel 'KV cache length N (tokens)'
set ylabel 'latency per decode step (ms)'
set key maxrows (keyrows + 1)
set title 'Decode latency per step (setting closest to 1/16 of the cache)' . mtitle_line
set offsets graph 0.04, graph 0.04, 0, 0
bar_ok(a, b) = (valid(a) && valid(b) && column(a) > 0 && column(b) > 0)
plot for [i=1:nblocks] datafile index (i-1) using 1:2:xtic(ntics($1)) \
     with linespoints lc rgb bcolor(i) pt bpoint(i) dt bdash(i) title word(names, i), \
     for [i=1:nblocks] datafile index (i-1) using 1:(bar_ok(3, 4) ? $2 : NaN):3:4 \
     with yerrorbars lc rgb bcolor(i) pt bpoint(i) notitle, \
     datafile index 0 using 1:7 with lines lc rgb '#000000' dt 2 lw 1.5 title 'bandwidth limit (dense)'
