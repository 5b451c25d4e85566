# qcorr build. `make` builds build/qcorr; `make test`, `make bench`, `make data`, `make demo`, `make tags`.
# Switches: NATIVE=0 (no -march=native), OPENMP=0 (no OpenMP), SANITIZE=1 (ASan+UBSan), DEBUG=1.

CC ?= cc
BUILD ?= build
NATIVE ?= 1
OPENMP ?= 1
SANITIZE ?= 0
DEBUG ?= 0

OPT := -O3
ifeq ($(DEBUG),1)
OPT := -O0 -g
endif
# -fno-math-errno -fno-trapping-math: floorf, clamps and selects in hot loops (exp_simd) vectorize;
# qcorr never reads errno from math calls nor the floating-point exception flags
CFLAGS_BASE := -std=c11 -D_GNU_SOURCE $(OPT) -g -fno-math-errno -fno-trapping-math -ffp-contract=fast -Wall -Wextra -Werror -Wno-unused-parameter -MMD -MP -Isrc
LDLIBS := -lm

# Probe a compiler flag: prints it if the compiler accepts it.
probe = $(shell echo 'int main(void){return 0;}' | $(CC) $(1) -x c - -o /dev/null 2>/dev/null && echo $(1))

ARCH_FLAGS :=
ifeq ($(NATIVE),1)
# znver1 tuning (what the Zen 1 VM reports) prefers 128-bit vectors: ask for the full AVX2 width
ARCH_FLAGS := $(call probe,-march=native) $(call probe,-mprefer-vector-width=256)
endif

# The kernel paths (src/kernels/kernels_<path>.c, chosen at run time: src/kernels/kernels.h) are each
# compiled for their own instruction set, whatever NATIVE says, so every build carries all of them;
# -mtune=generic so that no tuning narrows the vectors. Elsewhere than x86 each compiles as plain C.
ifneq ($(filter x86_64% i386% i486% i586% i686%,$(shell $(CC) -dumpmachine)),)
KERNEL_ISA_generic := -march=x86-64 -mtune=generic $(call probe,-Wno-psabi)
KERNEL_ISA_avx2 := $(or $(call probe,-march=x86-64-v3),-mavx2 -mfma -mbmi -mbmi2 -mf16c -mlzcnt -mmovbe) \
    -mtune=generic -mprefer-vector-width=256
KERNEL_ISA_avx512 := $(or $(call probe,-march=x86-64-v4),-mavx512f -mavx512bw -mavx512dq -mavx512vl -mavx512cd \
    -mavx2 -mfma -mbmi -mbmi2 -mf16c -mlzcnt -mmovbe) -mtune=generic -mprefer-vector-width=512
endif
KERNEL_PATHS := generic avx2 avx512
ifeq ($(OPENMP),1)
OMPFLAG := $(call probe,-fopenmp)
CFLAGS_BASE += $(OMPFLAG)
LDFLAGS += $(OMPFLAG)
endif
ifeq ($(OMPFLAG),)
CFLAGS_BASE += -Wno-unknown-pragmas
endif
ifeq ($(SANITIZE),1)
CFLAGS_BASE += -fsanitize=address,undefined,float-cast-overflow -fno-omit-frame-pointer -fno-sanitize-recover=undefined,float-cast-overflow
LDFLAGS += -fsanitize=address,undefined,float-cast-overflow
endif

# BLAS: OpenBLAS, the OpenMP build when present (it shares OpenMP's thread pool), else any cblas.
OPENBLAS_OMP_INC := /usr/include/x86_64-linux-gnu/openblas-openmp
OPENBLAS_OMP_LIB := /usr/lib/x86_64-linux-gnu/openblas-openmp
ifneq ($(wildcard $(OPENBLAS_OMP_INC)/cblas.h),)
BLAS_CFLAGS ?= -I$(OPENBLAS_OMP_INC)
BLAS_LIBS ?= -L$(OPENBLAS_OMP_LIB) -Wl,-rpath,$(OPENBLAS_OMP_LIB) -lopenblas
else
BLAS_CFLAGS ?= $(shell pkg-config --cflags openblas 2>/dev/null)
BLAS_LIBS ?= $(or $(shell pkg-config --libs openblas 2>/dev/null),-lopenblas)
endif
CFLAGS_BASE += $(BLAS_CFLAGS)
LDLIBS += $(BLAS_LIBS) -llapacke -lcjson
# recursive, so that a kernel path's object gets its own ARCH_FLAGS (target-specific, below)
CFLAGS = $(CFLAGS_BASE) $(ARCH_FLAGS) $(EXTRA_CFLAGS)

# every folder of src/ but the commands is the library (docs/DESIGN.md: Layers)
LIB_SRC := $(filter-out src/cli/%,$(wildcard src/*/*.c))
CLI_SRC := $(wildcard src/cli/*.c)
TEST_SRC := $(wildcard tests/test_*.c)
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/%.o)
CLI_OBJ := $(CLI_SRC:%.c=$(BUILD)/%.o)
TEST_BIN := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
BENCH_BIN := $(BUILD)/bench/bench

.PHONY: all test bench bench-libs data demo clean setup fuzz tags
all: $(BUILD)/qcorr

# Debian packages (installed only when missing); every entry point below runs it first.
setup:
	@sh scripts/setup.sh

$(BUILD)/%.o: %.c Makefile
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(foreach p,$(KERNEL_PATHS),$(eval $(BUILD)/src/kernels/kernels_$(p).o: ARCH_FLAGS := $(KERNEL_ISA_$(p))))

# rebuilt from scratch: `ar r` keeps members whose sources were moved or deleted
$(BUILD)/libqcorr.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/qcorr: $(CLI_OBJ) $(BUILD)/libqcorr.a
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(BUILD)/tests/%: $(BUILD)/tests/%.o $(BUILD)/tests/testutil.o $(BUILD)/libqcorr.a
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -lcmocka -o $@

$(BENCH_BIN): $(BUILD)/bench/bench.o $(BUILD)/libqcorr.a
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

# The unit and integration suites (cmocka), then the command-line tests (bad input, exit codes).
# the benchmark is built too (not run), so an API change cannot leave `make bench` broken
test: setup
	@$(MAKE) --no-print-directory $(TEST_BIN) $(BUILD)/qcorr $(BENCH_BIN)
	@QCORR=$(BUILD)/qcorr BUILD=$(BUILD) sh tests/run_all.sh $(TEST_BIN)

bench: setup
	@$(MAKE) --no-print-directory $(BENCH_BIN) $(BUILD)/qcorr
	@sh bench/run_bench.sh $(BENCH_BIN)

# The libraries that dispatch by CPU (OpenBLAS, BLIS, libxsmm, oneDNN, SLEEF) against qcorr's own
# kernels on the model's shapes (bench/libs.c); only this target needs the Debian packages it names.
# LIBS_ARGS passes flags, e.g. LIBS_ARGS="--threads 1 --clock cpu" on a machine shared with others.
LIBS_BENCH_LIBS := -L/usr/lib/x86_64-linux-gnu/blis-openmp -Wl,-rpath,/usr/lib/x86_64-linux-gnu/blis-openmp -lblis \
    -lxsmm -ldnnl -lsleef -ldl -lpthread
bench-libs: setup
	@BENCH_LIBS=1 sh scripts/setup.sh
	@$(MAKE) --no-print-directory $(BUILD)/bench/libs
	@OMP_WAIT_POLICY=$${OMP_WAIT_POLICY:-passive} $(BUILD)/bench/libs $(LIBS_ARGS)

$(BUILD)/bench/libs: $(BUILD)/bench/libs.o $(BUILD)/libqcorr.a
	$(CC) $(LDFLAGS) $^ $(LDLIBS) $(LIBS_BENCH_LIBS) -o $@

data:
	@sh scripts/get_data.sh

demo: setup data
	@$(MAKE) --no-print-directory all
	@sh scripts/demo.sh

clean:
	rm -rf $(BUILD)

# `make tags`: tags (vi) and TAGS (Emacs) of src/, tests/ and bench/ with Universal Ctags. A kernel
# body is written once as KERNEL(name) for every path (kernels_gemm.h, kernels_ops.h); -D indexes it
# under its op's name, so a jump to layernorm_backward offers ops.c's entry and the body itself.
TAGS_DIR ?= .
CTAGS_FLAGS := -R --languages=C --langmap=C:.c.h -D 'KERNEL(name)=name'
tags:
	@ctags --version 2>/dev/null | grep -q 'Universal Ctags' || { echo "make tags: needs Universal Ctags (Debian: universal-ctags)" >&2; exit 1; }
	@ctags $(CTAGS_FLAGS) -f $(TAGS_DIR)/tags src tests bench
	@ctags $(CTAGS_FLAGS) -e -f $(TAGS_DIR)/TAGS src tests bench

-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(TEST_BIN:=.d) $(BUILD)/tests/testutil.d $(BUILD)/bench/bench.d $(BUILD)/bench/libs.d

# ---- fuzzing: `make fuzz FUZZ_SECONDS=N` builds fuzz/fuzz_*.c with libFuzzer, ASan and UBSan
# against the library sources compiled by clang with the same flags (not the objects above),
# seeds fuzz/corpus-NAME/ from real files when missing (fuzz/make_seeds.sh) and runs each
# harness N seconds at low priority, printing executions, coverage and crashes per harness.
FUZZ_CC ?= clang
FUZZ_BUILD ?= build/fuzz
FUZZ_SECONDS ?= 60
FUZZ_FLAGS := -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
FUZZ_CFLAGS := -std=c11 -D_GNU_SOURCE $(FUZZ_FLAGS) -Wall -Wextra -Wno-unused-parameter -Wno-unknown-pragmas -Isrc $(BLAS_CFLAGS)
FUZZ_HARNESS := $(patsubst fuzz/%.c,$(FUZZ_BUILD)/%,$(wildcard fuzz/fuzz_*.c))
FUZZ_LIB_OBJ := $(patsubst %.c,$(FUZZ_BUILD)/%.o,$(LIB_SRC))

$(foreach p,$(KERNEL_PATHS),$(eval $(FUZZ_BUILD)/src/kernels/kernels_$(p).o: FUZZ_ISA := $(KERNEL_ISA_$(p))))
# objects kept between builds (make would otherwise delete them as intermediates)
.PRECIOUS: $(FUZZ_BUILD)/%.o
$(FUZZ_BUILD)/%.o: %.c Makefile
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_ISA) -MMD -MP -c $< -o $@

$(FUZZ_BUILD)/fuzz_%: $(FUZZ_BUILD)/fuzz/fuzz_%.o $(FUZZ_LIB_OBJ)
	$(FUZZ_CC) $(FUZZ_FLAGS) $^ -lm $(BLAS_LIBS) -llapacke -lcjson -o $@

fuzz: setup
	@command -v $(FUZZ_CC) >/dev/null 2>&1 || FUZZ=1 sh scripts/setup.sh
	@$(MAKE) --no-print-directory $(FUZZ_HARNESS) $(BUILD)/qcorr
	@QCORR=$(BUILD)/qcorr sh fuzz/make_seeds.sh --if-missing
	@sh fuzz/run.sh $(FUZZ_SECONDS) $(FUZZ_HARNESS)

-include $(FUZZ_LIB_OBJ:.o=.d) $(FUZZ_HARNESS:$(FUZZ_BUILD)/%=$(FUZZ_BUILD)/fuzz/%.d)
