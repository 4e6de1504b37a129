/* Minimal freestanding <stddef.h> for parsing with libclang (spdk_io). */
/* glibc asks for single pieces with __need_* macros; honour them.     */
#if !defined(__need_size_t) && !defined(__need_ptrdiff_t) && \
    !defined(__need_wchar_t) && !defined(__need_NULL) && \
    !defined(__need_wint_t) && !defined(__need_max_align_t) && \
    !defined(__need_offsetof)
#define __spdk_io_stddef_all 1
#endif

#if defined(__spdk_io_stddef_all) || defined(__need_size_t)
#ifndef __spdk_io_size_t
#define __spdk_io_size_t 1
typedef __SIZE_TYPE__ size_t;
#endif
#undef __need_size_t
#endif

#if defined(__spdk_io_stddef_all) || defined(__need_ptrdiff_t)
#ifndef __spdk_io_ptrdiff_t
#define __spdk_io_ptrdiff_t 1
typedef __PTRDIFF_TYPE__ ptrdiff_t;
#endif
#undef __need_ptrdiff_t
#endif

#if defined(__spdk_io_stddef_all) || defined(__need_wchar_t)
#ifndef __spdk_io_wchar_t
#define __spdk_io_wchar_t 1
typedef __WCHAR_TYPE__ wchar_t;
#endif
#undef __need_wchar_t
#endif

#if defined(__need_wint_t)
#ifndef __spdk_io_wint_t
#define __spdk_io_wint_t 1
typedef __WINT_TYPE__ wint_t;
#endif
#undef __need_wint_t
#endif

#if defined(__spdk_io_stddef_all) || defined(__need_NULL)
#undef NULL
#define NULL ((void *)0)
#undef __need_NULL
#endif

#if defined(__spdk_io_stddef_all) || defined(__need_max_align_t)
#ifndef __spdk_io_max_align_t
#define __spdk_io_max_align_t 1
typedef struct {
	long long __spdk_io_ll __attribute__((__aligned__(__alignof__(long long))));
	long double __spdk_io_ld __attribute__((__aligned__(__alignof__(long double))));
} max_align_t;
#endif
#undef __need_max_align_t
#endif

#if defined(__spdk_io_stddef_all) || defined(__need_offsetof)
#undef offsetof
#define offsetof(type, member) __builtin_offsetof(type, member)
#undef __need_offsetof
#endif

#undef __spdk_io_stddef_all
