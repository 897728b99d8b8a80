# speedup_vs_density.gp — speedup over dense attention (same workload) vs
# achieved density, one line per method at its largest sequence length
# (the file holds every length).
# Data: DATADIR/speedup_vs_density.tsv (attnbench export). Style: common.gp.
if (!exists("plotsdir")) plotsdir = 'plots'
load plotsdir.'/common.gp'

datafile = datadir.'/speedup_vs_density.tsv'
ncol = 6; icol = 7; nncol = 4
eval scan_blocks
eval scan_maxn

set logscale x 10
set logscale y 2
set format y '%gx'
set xtics ('0.1' 0.1, '0.2' 0.2, '0.5' 0.5, '1' 1, '2' 2, '5' 5, '10' 10, '20' 20, '50' 50, '100' 100)
set xrange [*:110]
set xlabel 'achieved density (% of allowed keys kept)'
set ylabel 'speedup over dense (x)'
set title sprintf('Speedup over dense attention vs density (N = %s)', ntics(gmaxn))
# the break-even line
set arrow 1 from graph 0, first 1 to graph 1, first 1 nohead lc rgb '#888888' dt 2 lw 1 back
plot for [i=1:nblocks] datafile index (i-1) using (pct($1)):(atmaxn(i, $2)) \
     with linespoints lc rgb bcolor(i) pt bpoint(i) dt bdash(i) title btitle(i)
