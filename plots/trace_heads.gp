# trace_heads.gp — real traces: attention-mass recall over every stored
# (layer, head) vs achieved density, one panel per method (at its longest
# prefix with every layer measured): median line, the middle half of the
# heads as a band, the worst and best head as bars; dense's 1 dotted.
# Data: DATADIR/trace_heads.tsv (attnbench export). Style: common.gp.
if (!exists("plotsdir")) plotsdir = 'plots'
load plotsdir.'/common.gp'

if (!exists("datafile")) datafile = datadir.'/trace_heads.tsv'
ncol = 7; icol = 8
eval scan_blocks
nncol = 9
eval scan_maxn
set logscale x 10
set xrange [0.02:1.2]
set yrange [0:1.05]
set ytics 0.2
set style fill transparent solid 0.22 noborder
npanels = nblocks
maxcols = 6
keyin = 0
ptitle = 'Real trace: mass recall per (layer, head) vs density (median, 25-75% band, min-max bars)' . mtitle_inline
eval panels_begin
unset key
do for [i = 1:nblocks] {
    set title word(names, i) . ' (N=' . ntics(bmax(i)) . ')'
    if (i % pcols == 1 || pcols == 1) { set ylabel 'recall'; set format y '%g' } else { unset ylabel; set format y '' }
    if (i > npanels - pcols) { set xlabel 'density'; set format x '%g' } else { unset xlabel; set format x '' }
    plot datafile index (i-1) using 1:3:4 with filledcurves lc rgb bcolor(i) notitle, \
         '' index (i-1) using 1:2:5:6 with yerrorbars lc rgb bcolor(i) pt bpoint(i) ps 0.7 notitle, \
         '' index (i-1) using 1:2 with lines lc rgb bcolor(i) lw 2 notitle, \
         1 with lines lc rgb '#999999' dt 3 notitle
}
unset multiplot
