/* Minimal freestanding <stdalign.h> for parsing with libclang (spdk_io). */
#ifndef __spdk_io_stdalign_h
#define __spdk_io_stdalign_h 1
#define alignas _Alignas
#define alignof _Alignof
#define __alignas_is_defined 1
#define __alignof_is_defined 1
#endif
