/* ThermoPilot C control core: compile-time dimensions and common types.
 *
 * C99, float32, no malloc, no printf. Every array in the core is sized by the
 * limits below; the caller owns every struct (static or on its own stack).
 */
#ifndef TP_CONFIG_H
#define TP_CONFIG_H

#include <stdint.h>

/* MPC limits: plant states, inputs, measured disturbances, soft-limited outputs, horizon. */
#ifndef TP_MPC_NX_MAX
#define TP_MPC_NX_MAX 8
#endif
#ifndef TP_MPC_NU_MAX
#define TP_MPC_NU_MAX 3
#endif
#ifndef TP_MPC_ND_MAX
#define TP_MPC_ND_MAX 3
#endif
#ifndef TP_MPC_NY_MAX
#define TP_MPC_NY_MAX 8
#endif
#ifndef TP_MPC_N_MAX
#define TP_MPC_N_MAX 30
#endif

/* The MPC works on the plant state augmented with the previous input (rate limits). */
#define TP_MPC_NXA_MAX (TP_MPC_NX_MAX + TP_MPC_NU_MAX)
/* Rows of the constraint map G = [[C, 0], [0, I]]: soft outputs, then hard inputs. */
#define TP_MPC_NG_MAX (TP_MPC_NY_MAX + TP_MPC_NU_MAX)

typedef float tp_float;

#endif /* TP_CONFIG_H */
