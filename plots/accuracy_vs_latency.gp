# accuracy_vs_latency.gp — task accuracy vs latency per call, one panel per
# task at the task's largest sequence length; every setting of a method is a
# point, its Pareto front (no setting both faster and more accurate) a line.
# Latency from the timed points only, accuracy pooled over every status-ok
# point (untimed, scored-only ones included); the latency's 95% interval is
# in the data (columns 13-14), not drawn (bars would hide the points).
# Data: DATADIR/accuracy_vs_latency.tsv (attnbench export). Style: common.gp.
if (!exists("plotsdir")) plotsdir = 'plots'
load plotsdir.'/common.gp'

if (!exists("datafile")) datafile = datadir.'/accuracy_vs_latency.tsv'
ncol = 10; icol = 11
eval scan_blocks
tasks = ' '
taskn = ' '
do for [b_ = 0:nblocks-1] {
    stats datafile index b_ using (t_ = strcol(7), \
          taskn = (strstrt(tasks, ' ' . t_ . ' ') ? taskn : taskn . sprintf('%d ', $8)), \
          tasks = (strstrt(tasks, ' ' . t_ . ' ') ? tasks : tasks . t_ . ' '), 0) nooutput
}
ntasks = words(tasks)

stats datafile using 1 nooutput  # before any range is set
set logscale x 10
set xrange [STATS_min / 1.5 : STATS_max * 1.5]
set format x '%g'
# 1-2-5 tics over the decades the data spans
set xtics ()
do for [e_ = -3:6] { set xtics add (sprintf('%g', 10.0**e_) 10.0**e_, sprintf('%g', 2 * 10.0**e_) 2 * 10.0**e_, sprintf('%g', 5 * 10.0**e_) 5 * 10.0**e_) }
set yrange [-0.03:1.05]
set ytics 0.2
set xlabel 'latency per call (ms)'
set ylabel 'task accuracy'
npanels = ntasks
ptitle = 'Accuracy vs latency (points: settings; lines: each method''s Pareto front)' . mtitle_inline
if (ntasks > 1) { eval panels_begin }
do for [t = 1:ntasks] {
    task = word(tasks, t)
    tn = word(taskn, t) + 0
    if (ntasks > 1) {
        set title sprintf('%s (N = %s)', task, ntics(tn))
        if (t == 1) { eval keyat } else { unset key }
        if (t % pcols == 1 || pcols == 1) { set ylabel 'task accuracy'; set format y '%g' } else { unset ylabel; set format y '' }
    } else {
        set title sprintf('Accuracy vs latency: %s, N = %s (lines: Pareto fronts)', task, ntics(tn)) . mtitle_line
    }
    plot for [i=1:nblocks] datafile index (i-1) using 1:((strcol(7) eq task && $6 == 1) ? $2 : NaN) \
             with lines lc rgb bcolor(i) dt bdash(i) notitle, \
         for [i=1:nblocks] datafile index (i-1) using 1:(strcol(7) eq task ? $2 : NaN) \
             with points lc rgb bcolor(i) pt bpoint(i) title word(names, i)
}
if (ntasks > 1) { unset multiplot }
