# MicroPython make-based ports (rp2 with make, unix, stm32): USER_C_MODULES=<repo>/firmware
TPCORE_MOD_DIR := $(USERMOD_DIR)
SRC_USERMOD_C += $(TPCORE_MOD_DIR)/tp_mod.c $(TPCORE_MOD_DIR)/tp_pid.c $(TPCORE_MOD_DIR)/tp_mpc.c
CFLAGS_USERMOD += -I$(TPCORE_MOD_DIR)
