# gpu_bench.gp — figure of `make bench-gpu`: TFLOP/s (FLOPs actually
# required) vs sequence length per GPU kernel, from DIR/gpu_bench_wide.tsv
# written by bench/gpu_bench.c. Usage: gnuplot -e "dir='results/gpu_bench'" bench/gpu_bench.gp
if (!exists("dir")) dir = "results/gpu_bench"
set terminal pngcairo size 900,560 noenhanced
set output dir."/gpu_bench.png"
set datafile separator "\t"
set datafile missing "nan"
set key top left
set logscale x 2
set xlabel "sequence length N"
set ylabel "TFLOP/s (required FLOPs)"
set title "attnbench GPU kernels (bench/gpu_bench.c); data: ".dir."/gpu_bench_wide.tsv"
set grid
plot for [c=2:9] dir."/gpu_bench_wide.tsv" using 1:c with linespoints title columnheader(c)
