/* Minimal freestanding <stdnoreturn.h> for parsing with libclang (spdk_io). */
#ifndef __spdk_io_stdnoreturn_h
#define __spdk_io_stdnoreturn_h 1
#define noreturn _Noreturn
#endif
