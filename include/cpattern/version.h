/**
 * @file cpattern/version.h
 * @brief libcpattern: version information.
 *
 * The macros give the version the program was compiled against;
 * cpat_version() gives the version of the library it runs with. The build
 * reads CPAT_VERSION_* and CPAT_SOVERSION from this file and refuses to
 * configure when they disagree with the project version, so this file is the
 * single place where the version lives.
 */
#ifndef CPATTERN_VERSION_H
#define CPATTERN_VERSION_H

#include "cpattern/common.h"

/** The major version the program was compiled against. */
#define CPAT_VERSION_MAJOR 0
/** The minor version the program was compiled against. */
#define CPAT_VERSION_MINOR 1
/** The patch version the program was compiled against. */
#define CPAT_VERSION_PATCH 0
/** The shared library's ABI number (libcpattern.so.N). */
#define CPAT_SOVERSION 0

/** A single comparable number: 0xMMmmpp. */
#define CPAT_VERSION_NUMBER                                       \
	((CPAT_VERSION_MAJOR << 16) | (CPAT_VERSION_MINOR << 8) | \
	 CPAT_VERSION_PATCH)

#ifdef __cplusplus
extern "C" {
#endif

/**
 * The version of the library in use, as "MAJOR.MINOR.PATCH".
 *
 * Never blocks; thread-safe. The string is static: never free it.
 * @return a static NUL-terminated string.
 */
CPAT_API const char *cpat_version(void);

/**
 * The version of the library in use as CPAT_VERSION_NUMBER would spell it,
 * to compare at run time with the version compiled against.
 *
 * Never blocks; thread-safe.
 * @return (major << 16) | (minor << 8) | patch.
 */
CPAT_API unsigned cpat_version_number(void);

#ifdef __cplusplus
}
#endif

#endif /* CPATTERN_VERSION_H */
