# decode_layers.gp — decode on a layer stack: attention-mass recall per
# layer (the share of each layer's exact softmax mass on the keys it reads),
# for the layer-reuse methods (TidalDecode, DELTA) and any other method run
# on a stack, at the largest cache length and the setting closest to 1/16.
# Data: DATADIR/decode_layers.tsv (attnbench export). Style: common.gp.
if (!exists("plotsdir")) plotsdir = 'plots'
load plotsdir.'/common.gp'

if (!exists("datafile")) datafile = datadir.'/decode_layers.tsv'
ncol = 3; icol = 4
eval scan_blocks
set yrange [0:1.05]
set xlabel 'layer'
set ylabel 'mass recall'
set title 'Decode recall per layer (layer stacks: largest N, setting closest to 1/16)' . mtitle_line
set offsets graph 0.04, graph 0.04, 0, 0
plot for [i=1:nblocks] datafile index (i-1) using 1:2 \
     with linespoints lc rgb bcolor(i) pt bpoint(i) dt bdash(i) title word(names, i)
