# dense_vs_mask.gp — dense attention time under each base mask relative to
# dense under causal on the same workload (points, one colour per sequence
# length), against the ideal: the ratio of the pairs the mask allows to the
# pairs causal allows (black bars). A kernel whose time is proportional to
# the allowed pairs sits on its bar; above it, the mask costs more than its
# work (partial blocks, per-element tests, too little block skipping).
# Drawn when the file holds causal and at least one other base mask.
# Data: DATADIR/dense_vs_mask.tsv, mask names DATADIR/masks.txt (attnbench
# export). Style: common.gp.
if (!exists("plotsdir")) plotsdir = 'plots'
load plotsdir.'/common.gp'

if (!exists("datafile")) datafile = datadir.'/dense_vs_mask.tsv'
maskfile = datadir.'/masks.txt'

stats datafile using 1 nooutput
nblocks = STATS_blocks
stats maskfile using 1 nooutput
nmask = int(STATS_max)
lens = ''
do for [b_ = 0:nblocks-1] {
    stats datafile index b_ using 7 nooutput
    lens = lens . sprintf(' %d', STATS_max)
}
# y range over the measured and the ideal ratios (before any range is set)
stats datafile using 2 nooutput
ylo = STATS_min; yhi = STATS_max
stats datafile using 3 nooutput
ylo = (STATS_min < ylo) ? STATS_min : ylo
yhi = (STATS_max > yhi) ? STATS_max : yhi
ylo = (ylo < 1) ? ylo / 1.5 : 0.7
yhi = (yhi > 1) ? yhi * 1.5 : 1.4

# x axis: one slot per base mask, labelled from masks.txt (line k = mask k)
set xtics () scale 0
do for [k = 1:nmask] {
    stats maskfile every ::(k - 1)::(k - 1) using (lab_ = strcol(2), 0) nooutput
    set xtics add (lab_ k)
}
# more than three masks: slanted labels (specs are long), no axis label
if (nmask > 3) { set xtics rotate by 30 right; set bmargin 8.5 }
unset mxtics
set grid noxtics nomxtics ytics mytics
set xrange [0.4 : nmask + 0.6]
set logscale y 2
set yrange [ylo : yhi]
set format y '%gx'
if (nmask > 3) { unset xlabel } else { set xlabel 'base mask' }
set ylabel 'dense time / dense time under causal'
set title 'Dense attention time per base mask, relative to causal'
set arrow 1 from graph 0, first 1 to graph 1, first 1 nohead lc rgb '#888888' dt 2 lw 1 back

w_ = 0.6 / nblocks
off(i) = (i - (nblocks + 1) / 2.0) * w_
ncolor(i) = mcolor(i + 1)
plot for [i=1:nblocks] datafile index (i-1) using ($1 + off(i) - 0.45 * w_):3:(0.9 * w_):(0) \
         with vectors nohead lw 3 lc rgb '#000000' title (i == 1 ? 'ideal (allowed pairs)' : ''), \
     for [i=1:nblocks] datafile index (i-1) using ($1 + off(i)):2 \
         with points pt 7 ps 1.5 lc rgb ncolor(i) title sprintf('measured, N = %s', ntics(word(lens, i) + 0))
