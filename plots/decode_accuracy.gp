# decode_accuracy.gp — decode: task accuracy at the decode queries vs the
# share of the cache kept (budget / N), every point with answers (all cache
# lengths); bars: Wilson 95% intervals; grey crosses: dense decode's
# accuracy on the same problems.
# Data: DATADIR/decode_accuracy.tsv (attnbench export). Style: common.gp.
if (!exists("plotsdir")) plotsdir = 'plots'
load plotsdir.'/common.gp'

if (!exists("datafile")) datafile = datadir.'/decode_accuracy.tsv'
ncol = 7; icol = 8
eval scan_blocks
set logscale x 10
set yrange [-0.05:1.05]
set xlabel 'density (kept keys / cache length)'
set ylabel 'accuracy at the decode queries'
set title 'Decode accuracy vs budget' . mtitle_line
set offsets graph 0.04, graph 0.04, 0, 0
plot for [i=1:nblocks] datafile index (i-1) using 1:2:3:4 \
     with yerrorbars lc rgb bcolor(i) pt bpoint(i) ps 1.3 title word(names, i), \
     for [i=1:nblocks] datafile index (i-1) using 1:5 with points lc rgb '#999999' pt 1 notitle
