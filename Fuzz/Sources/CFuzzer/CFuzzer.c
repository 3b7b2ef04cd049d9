// See include/CFuzzer.h: nothing to compile.
