# cpu_vs_gpu.gp — latency per call vs sequence length on each device, log-log:
# a method keeps its colour, solid lines and filled points are the CPU,
# dashed lines and open points the GPU (density closest to 10%). Drawn only
# when the file holds points of more than one device. Error bars: the 95%
# interval of the median (bootstrap over rounds, columns 13-14) where the
# point has one.
# Data: DATADIR/cpu_vs_gpu.tsv (attnbench export). Style: common.gp.
if (!exists("plotsdir")) plotsdir = 'plots'
load plotsdir.'/common.gp'

if (!exists("datafile")) datafile = datadir.'/cpu_vs_gpu.tsv'
ncol = 8; icol = 9
eval scan_blocks
bdev = ''
do for [b_ = 0:nblocks-1] {
    stats datafile index b_ every ::0::0 using (d_ = column(11), 0) nooutput
    bdev = bdev . sprintf(' %d', d_)
}
devdash(i) = (word(bdev, i) + 0 == 1) ? 1 : ((word(bdev, i) + 0 == 2) ? 2 : 4)
devpt(i) = (word(bdev, i) + 0 == 1) ? bpoint(i) : bpoint(i) - 1

# one sequence length only: an x range around it (else gnuplot warns "empty x range")
stats datafile using 1 nooutput
if (STATS_min == STATS_max) { set xrange [STATS_min / 1.5 : STATS_max * 1.5] }
set logscale x 2
set logscale y 10
set format y '%g'
set xlabel 'sequence length N (tokens)'
set ylabel 'latency per call (ms)'
bar_ok(a, b) = (valid(a) && valid(b) && column(a) > 0 && column(b) > 0)
stats datafile using (bar_ok(13, 14) ? 1 : 0) nooutput
bars = (STATS_sum > 0) ? "\nbars: 95% interval (bootstrap over rounds)" : ''
set title 'CPU vs GPU latency (density ~10%; solid: CPU, dashed: GPU)' . bars . mtitle_line
set offsets graph 0.04, graph 0.04, 0, 0
plot for [i=1:nblocks] datafile index (i-1) using 1:2:xtic(ntics($1)) \
     with linespoints lc rgb bcolor(i) pt devpt(i) dt devdash(i) title word(names, i), \
     for [i=1:nblocks] datafile index (i-1) using 1:(bar_ok(13, 14) ? $2 : NaN):13:14 \
     with yerrorbars lc rgb bcolor(i) pt devpt(i) notitle
