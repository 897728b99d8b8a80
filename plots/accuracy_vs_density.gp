# accuracy_vs_density.gp — task accuracy vs achieved density with Wilson 95%
# error bars, one line per method at its largest sequence length, one panel
# per task (the file holds every length).
# Data: DATADIR/accuracy_vs_density.tsv (attnbench export). Style: common.gp.
if (!exists("plotsdir")) plotsdir = 'plots'
load plotsdir.'/common.gp'

if (!exists("datafile")) datafile = datadir.'/accuracy_vs_density.tsv'
ncol = 8; icol = 9
eval scan_blocks
# which tasks each block holds: pairs = " BLOCK|TASK ...", tasks = " t1 t2 "
pairs = ' '
tasks = ' '
do for [b_ = 0:nblocks-1] {
    stats datafile index b_ using (t_ = strcol(5), pairs = pairs . sprintf('%d|%s ', b_ + 1, t_), \
          tasks = (strstrt(tasks, ' ' . t_ . ' ') ? tasks : tasks . t_ . ' '), 0) nooutput
}
ntasks = words(tasks)
# per task: the blocks holding it (BL), each one's largest N on it (NL), the
# largest N of all (TM); scanned before the axes are set (ranges limit stats)
array BL[ntasks]
array NL[ntasks]
array TM[ntasks]
do for [t = 1:ntasks] {
    task = word(tasks, t)
    BL[t] = ''
    NL[t] = ''
    TM[t] = 0
    do for [i = 1:nblocks] {
        if (strstrt(pairs, sprintf(' %d|%s ', i, task))) {
            stats datafile index (i - 1) using (strcol(5) eq task ? $6 : NaN) nooutput
            BL[t] = BL[t] . ' ' . i
            NL[t] = NL[t] . sprintf(' %d', STATS_max)
            TM[t] = (STATS_max > TM[t]) ? STATS_max : TM[t]
        }
    }
}

set logscale x 10
set xtics ('0.1' 0.1, '0.2' 0.2, '0.5' 0.5, '1' 1, '2' 2, '5' 5, '10' 10, '20' 20, '50' 50, '100' 100)
stats datafile using 1 nooutput  # before any range is set: ranges limit stats
set xrange [pct(STATS_min) / 1.5 : 110]
set yrange [-0.03:1.05]
set ytics 0.2
set xlabel 'achieved density (%)'
set ylabel 'task accuracy'

npanels = ntasks
ptitle = 'Task accuracy vs density (Wilson 95% intervals)' . mtitle_inline
if (ntasks > 1) { eval panels_begin }
do for [t = 1:ntasks] {
    task = word(tasks, t)
    blist = BL[t]
    nlist = NL[t]
    tmaxn = TM[t]
    nb = words(blist)
    if (ntasks > 1) {
        set title sprintf('%s (N = %s)', task, ntics(tmaxn))
        # one key, beside the first panel
        if (t == 1) { eval keyat } else { unset key }
        if (t % pcols == 1 || pcols == 1) { set ylabel 'task accuracy'; set format y '%g' } else { unset ylabel; set format y '' }
    } else {
        set title sprintf('Task accuracy vs density: %s, N = %s (Wilson 95%% intervals)', task, ntics(tmaxn)) . mtitle_line
    }
    plot for [k = 1:nb] datafile index (word(blist, k) - 1) \
         using (pct($1)):((strcol(5) eq task && $6 == word(nlist, k) + 0) ? $2 : NaN):3:4 \
         with yerrorlines lc rgb bcolor(word(blist, k) + 0) pt bpoint(word(blist, k) + 0) \
         dt bdash(word(blist, k) + 0) \
         title word(names, word(blist, k) + 0) . ((word(nlist, k) + 0 < tmaxn) ? ' (N=' . ntics(word(nlist, k) + 0) . ')' : '')
}
if (ntasks > 1) { unset multiplot }
