# speedup_vs_density.gp — speedup over dense attention on the same workload
# vs achieved density, one panel per sequence length, one line per method.
# Error bars: the 95% interval (bootstrap over rounds) of the paired ratio to
# dense measured in the same child process (columns 8-9); rows without one
# (files before the timing protocol, unpaired points: dense latency /
# latency) have no bar.
# Data: DATADIR/speedup_vs_density.tsv (attnbench export). Style: common.gp.
if (!exists("plotsdir")) plotsdir = 'plots'
load plotsdir.'/common.gp'

if (!exists("datafile")) datafile = datadir.'/speedup_vs_density.tsv'
ncol = 6; icol = 7
eval scan_blocks
ucol = 4
eval scan_nums
stats datafile using 2 nooutput
ylo = STATS_min < 1 ? STATS_min / 1.4 : 0.7
yhi = STATS_max > 1 ? STATS_max * 1.4 : 1.4
# the intervals widen the range when they reach beyond the medians
stats datafile using ((valid(8) && valid(9)) ? 1 : 0) nooutput
hasci = (STATS_sum > 0)
if (hasci) {
    stats datafile using (valid(8) ? $8 : NaN) nooutput
    ylo = (STATS_min < ylo * 1.4) ? STATS_min / 1.4 : ylo
    stats datafile using (valid(9) ? $9 : NaN) nooutput
    yhi = (STATS_max > yhi / 1.4) ? STATS_max * 1.4 : yhi
}
bars = hasci ? 'bars: 95% interval (bootstrap over rounds)' : 'no intervals (dense latency / latency)'

set logscale x 10
set logscale y 2
set format y '%gx'
set xtics ('0.1' 0.1, '0.2' 0.2, '0.5' 0.5, '1' 1, '2' 2, '5' 5, '10' 10, '20' 20, '50' 50, '100' 100)
stats datafile using 1 nooutput  # before any range is set: ranges limit stats
set xrange [pct(STATS_min) / 1.5 : 110]
set yrange [ylo:yhi]
set xlabel 'achieved density (%)'
set ylabel 'speedup over dense (x)'
# the break-even line
set arrow 1 from graph 0, first 1 to graph 1, first 1 nohead lc rgb '#888888' dt 2 lw 1 back

npanels = nnums
ptitle0 = 'Speedup over dense attention vs density (same workload; dashed: break-even)'
ptitle = ptitle0 . '   ' . bars . mtitle_inline
if (npanels > 1) { eval panels_begin } else { set title ptitle0 . "\n" . bars . mtitle_line; keyin = 0 }
do for [k = 1:npanels] {
    nk = word(nums, k) + 0
    if (npanels > 1) {
        set title sprintf('N = %s', ntics(nk))
        if (k == 1) { eval keyat } else { unset key }
        if (k % pcols == 1 || pcols == 1) { set ylabel 'speedup over dense (x)'; set format y '%gx' } else { unset ylabel; set format y '' }
    }
    plot for [i=1:nblocks] datafile index (i-1) using (pct($1)):($4 == nk ? $2 : NaN) \
         with linespoints lc rgb bcolor(i) pt bpoint(i) dt bdash(i) title word(names, i), \
         for [i=1:nblocks] datafile index (i-1) using (pct($1)):($4 == nk ? $2 : NaN):8:9 \
         with yerrorbars lc rgb bcolor(i) pt bpoint(i) notitle
}
if (npanels > 1) { unset multiplot }
