# trace_heads.gp — real traces: attention-mass recall over every stored
# (layer, head) vs achieved density, each method at its longest prefix with
# every layer measured: median line, the middle half of the heads as a band,
# the worst and best head as bars.
# Data: DATADIR/trace_heads.tsv (attnbench export). Style: common.gp.
if (!exists("plotsdir")) plotsdir = 'plots'
load plotsdir.'/common.gp'

if (!exists("datafile")) datafile = datadir.'/trace_heads.tsv'
ncol = 7; icol = 8
eval scan_blocks
set logscale x 10
set yrange [0:1.05]
set xlabel 'density (computed pairs / pairs the mask allows)'
set ylabel 'mass recall per head'
set title 'Real trace: recall over heads (median, 25-75% band, min-max bars)' . mtitle_line
set offsets graph 0.04, graph 0.04, 0, 0
set style fill transparent solid 0.18 noborder
plot for [i=1:nblocks] datafile index (i-1) using 1:3:4 with filledcurves lc rgb bcolor(i) notitle, \
     for [i=1:nblocks] datafile index (i-1) using 1:2:5:6 with yerrorbars lc rgb bcolor(i) pt bpoint(i) ps 0.8 notitle, \
     for [i=1:nblocks] datafile index (i-1) using 1:2 with lines lc rgb bcolor(i) dt bdash(i) lw 2 title word(names, i)
