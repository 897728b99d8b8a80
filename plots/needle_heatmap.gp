# needle_heatmap.gp — needle-in-a-haystack accuracy by sequence length (x)
# and needle depth (y), one panel per method at its density closest to 10%;
# colour and the printed number are the accuracy (0..1); a grey cell has no
# status-ok point (not measured, or e.g. calib_failed).
# Data: DATADIR/needle_heatmap.tsv (attnbench export). Style: common.gp.
if (!exists("plotsdir")) plotsdir = 'plots'
load plotsdir.'/common.gp'

if (!exists("datafile")) datafile = datadir.'/needle_heatmap.tsv'
ncol = 8; icol = 9
eval scan_blocks
# the shared grid: tic labels from every block
stats datafile using 1 nooutput
nlen = int(STATS_max) + 1
stats datafile using 2 nooutput
ndep = int(STATS_max) + 1
lenlab = ''
deplab = ''
do for [k = 0:nlen-1] {
    stats datafile using ($1 == k ? $4 : NaN) nooutput
    lenlab = lenlab . ' ' . ntics(STATS_min)
}
do for [k = 0:ndep-1] {
    stats datafile using ($2 == k ? $5 : NaN) nooutput
    deplab = deplab . sprintf(' %g', STATS_min)
}
# each panel's density (median over its cells)
bdens = ''
do for [b_ = 0:nblocks-1] {
    stats datafile index b_ using 6 nooutput
    bdens = bdens . sprintf(' %.3g', 100.0 * STATS_median)
}

set palette defined (0 '#440154', 0.25 '#3b528b', 0.5 '#21918c', 0.75 '#5ec962', 1 '#fde725')
set cbrange [0:1]
set cbtics 0.25
set xrange [-0.5:nlen-0.5]
set yrange [-0.5:ndep-0.5]
unset grid
set border 15 lw 1 lc rgb '#444444'
set tics scale 0
set xtics () ; set ytics ()
do for [k = 0:nlen-1] { set xtics add (word(lenlab, k + 1) k) }
do for [k = 0:ndep-1] { set ytics add (word(deplab, k + 1) k) }
unset key
cellfont = (term eq 'png') ? ',19' : ((term eq 'svg') ? ',10' : ',7')
# grey behind the cells: a grey cell has no status-ok point
set object 1 rectangle from graph 0, graph 0 to graph 1, graph 1 behind fc rgb '#d9d9d9' fs solid 1.0 noborder

npanels = nblocks
maxcols = (nblocks > 9) ? 4 : 3
keyin = 0.55
ptitle = 'Needle accuracy by length and depth (density ~10%)' . mtitle_inline
eval panels_begin
set colorbox user origin screen pright + 0.12 / (4.2 * figw), screen 0.3 size screen 0.08 / (4.2 * figw), screen 0.5
set cblabel 'accuracy'
do for [i = 1:nblocks] {
    set title sprintf('%s (%s%%)', word(names, i), word(bdens, i))
    if ((i - 1) % pcols == 0) { set ylabel 'needle depth' } else { unset ylabel }
    if (i > nblocks - pcols) { set xlabel 'N (tokens)' } else { unset xlabel }
    plot datafile index (i-1) using 1:2:(0.5):(0.5):3 with boxxyerror fs solid 1.0 noborder lc palette, \
         '' index (i-1) using 1:2:(sprintf('%.2f', $3)):($3 > 0.6 ? 0 : 0xffffff) with labels tc rgb variable font cellfont
}
unset multiplot
