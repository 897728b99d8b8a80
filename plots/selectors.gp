# selectors.gp — each selector's measured cost against the bound it states:
# per method (x), select_ms / dense_ms (filled point) and the stated bound
# select_flops / dense FLOPs (open point, same colour), log scale, one pair
# per sequence length in the file; where the run measured its STREAM
# bandwidth ([timing] measure_bandwidth = 1), also the time the stated
# select_bytes take at it, over dense (open triangle): the roofline is the
# higher of the two open marks. A filled point within 2x above that mark is
# a selector at its bound (issue target); far above, the selector spends
# its time on something other than the work it states.
# Static patterns state 0 (no point on the log axis). Data:
# DATADIR/selectors.tsv (attnbench export). Style: common.gp.
if (!exists("plotsdir")) plotsdir = 'plots'
load plotsdir.'/common.gp'

if (!exists("datafile")) datafile = datadir.'/selectors.tsv'
ncol = 14; icol = 15
eval scan_blocks

set logscale y 10
set format y '%g'
set xrange [0.3 : nblocks + 0.7]
set xtics rotate by 45 right nomirror
set xtics ()
do for [i=1:nblocks] { set xtics add (word(names, i) i) }
set grid noxtics ytics mytics
set ylabel 'time or work / dense'
set title 'Selectors: select / dense (filled) vs stated bound (open)' . mtitle_line
set key inside left top Left reverse maxrows 3
plot for [i=1:nblocks] datafile index (i-1) using (i):($2 > 0 ? $2 : 1/0) \
         with points lc rgb bcolor(i) pt 7 notitle, \
     for [i=1:nblocks] datafile index (i-1) using (i):($5 > 0 ? $5 : 1/0) \
         with points lc rgb bcolor(i) pt 6 ps 1.6 notitle, \
     for [i=1:nblocks] datafile index (i-1) using (i):($16 > 0 ? $16 : 1/0) \
         with points lc rgb bcolor(i) pt 8 ps 1.4 notitle, \
     for [i=1:nblocks] datafile index (i-1) using (i):($3 > 0 ? $3 : 1/0) \
         with points lc rgb '#999999' pt 2 notitle, \
     NaN with points lc rgb '#444444' pt 7 title 'select / dense (measured)', \
     NaN with points lc rgb '#444444' pt 6 ps 1.6 title 'bound: FLOPs / dense FLOPs', \
     NaN with points lc rgb '#444444' pt 8 ps 1.4 title 'bound: bytes at STREAM', \
     NaN with points lc rgb '#999999' pt 2 title 'run / dense'
