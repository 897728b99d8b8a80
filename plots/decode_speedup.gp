# decode_speedup.gp — decode: speedup over dense decode (paired ratio,
# select included) vs the fraction of the K/V cache read per step: the keys
# and values the attention reads plus the bytes select() states it moves
# (Quest's page bounds, say), every timed point (all cache lengths), log-log.
# The dotted diagonal is the bandwidth ideal, 1 / fraction read. Bars: 95%
# interval.
# Data: DATADIR/decode_speedup.tsv (attnbench export). Style: common.gp.
if (!exists("plotsdir")) plotsdir = 'plots'
load plotsdir.'/common.gp'

if (!exists("datafile")) datafile = datadir.'/decode_speedup.tsv'
ncol = 7; icol = 8; xcol = 10
eval scan_blocks
set logscale x 10
set logscale y 2
set format y '%gx'
set xlabel 'fraction of the cache read per step (K/V + selector)'
set ylabel 'speedup over dense decode'
set key maxrows (keyrows + 1)
set title 'Decode speedup vs cache read' . mtitle_line
set offsets graph 0.04, graph 0.04, graph 0.04, graph 0.04
bar_ok(a, b) = (valid(a) && valid(b) && column(a) > 0 && column(b) > 0)
plot for [i=1:nblocks] datafile index (i-1) using xcol:2 \
     with points lc rgb bcolor(i) pt bpoint(i) ps 1.4 title word(names, i), \
     for [i=1:nblocks] datafile index (i-1) using xcol:(bar_ok(3, 4) ? $2 : NaN):3:4 \
     with yerrorbars lc rgb bcolor(i) pt bpoint(i) notitle, \
     1.0 / x with lines lc rgb '#777777' dt 3 title 'ideal: 1 / fraction read'
