bench/bench: bench/bench.c \
 /usr/include/x86_64-linux-gnu/openblas-openmp/cblas.h \
 /usr/include/x86_64-linux-gnu/openblas-openmp/openblas_config.h \
 src/base/util.h src/correct/correct.h src/nn/model.h src/nn/actscheme.h \
 src/tables/methods.h src/tables/sites.h src/correct/experiment.h \
 src/nn/data.h src/nn/evaluate.h src/quant/quant.h src/quant/calib.h \
 src/quant/fakequant.h src/quant/gptq.h src/kernels/gemm.h \
 src/kernels/kernels.h src/nn/optim.h src/nn/train.h
/usr/include/x86_64-linux-gnu/openblas-openmp/cblas.h:
/usr/include/x86_64-linux-gnu/openblas-openmp/openblas_config.h:
src/base/util.h:
src/correct/correct.h:
src/nn/model.h:
src/nn/actscheme.h:
src/tables/methods.h:
src/tables/sites.h:
src/correct/experiment.h:
src/nn/data.h:
src/nn/evaluate.h:
src/quant/quant.h:
src/quant/calib.h:
src/quant/fakequant.h:
src/quant/gptq.h:
src/kernels/gemm.h:
src/kernels/kernels.h:
src/nn/optim.h:
src/nn/train.h:
