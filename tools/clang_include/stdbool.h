/* Minimal freestanding <stdbool.h> for parsing with libclang (spdk_io). */
#ifndef __spdk_io_stdbool_h
#define __spdk_io_stdbool_h 1
#define bool _Bool
#define true 1
#define false 0
#define __bool_true_false_are_defined 1
#endif
