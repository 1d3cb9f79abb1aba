#!/bin/sh
# Compile the ThermoPilot C control core for the board targets with warnings as errors
# and print code/data size per target (text, data, bss in bytes, Berkeley format).
#   RP2040 (Cortex-M0+), RP2350 (Cortex-M33), ESP32-C3 (RV32IMC).
# The MicroPython binding (natmod/) needs a MicroPython tree: make natmod MPY_DIR=...
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${TP_CROSS_OUT:-$(mktemp -d)}
SRCS="tp_pid.c tp_mpc.c"
COMMON="-std=c99 -Os -Wall -Wextra -Werror -pedantic -ffreestanding -ffunction-sections -fdata-sections"
status=0

build() {
    name=$1 cc=$2 size=$3
    shift 3
    if ! command -v "$cc" >/dev/null 2>&1; then
        echo "MISSING $name: $cc not installed" >&2
        status=1
        return
    fi
    mkdir -p "$OUT/$name"
    objs=""
    for s in $SRCS; do
        o="$OUT/$name/${s%.c}.o"
        # shellcheck disable=SC2086
        "$cc" $COMMON "$@" -I"$HERE" -c "$HERE/$s" -o "$o" || { status=1; return; }
        objs="$objs $o"
    done
    # the caller-owned structs: RAM a board spends on one PID and one MPC
    printf '#include "tp_mpc.h"\n#include "tp_pid.h"\ntp_mpc_t tp_ws_mpc;\ntp_pid_t tp_ws_pid;\n' \
        >"$OUT/$name/ws.c"
    # shellcheck disable=SC2086
    "$cc" $COMMON "$@" -fno-common -I"$HERE" -c "$OUT/$name/ws.c" -o "$OUT/$name/ws.o" || status=1
    ws=$("$size" "$OUT/$name/ws.o" | awk 'NR == 2 { print $3 }')
    # shellcheck disable=SC2086
    "$size" -t $objs | awk -v n="$name" -v ws="$ws" \
        'END { printf "%-10s text=%s data=%s bss=%s workspace=%s\n", n, $1, $2, $3, ws }'
}

build rp2040 arm-none-eabi-gcc arm-none-eabi-size -mcpu=cortex-m0plus -mthumb -mfloat-abi=soft
build rp2350 arm-none-eabi-gcc arm-none-eabi-size -mcpu=cortex-m33 -mthumb -mfloat-abi=hard \
    -mfpu=fpv5-sp-d16
build esp32c3 riscv64-unknown-elf-gcc riscv64-unknown-elf-size -march=rv32imc -mabi=ilp32
exit $status
