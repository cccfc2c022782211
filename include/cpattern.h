/**
 * @file cpattern.h
 * @brief libcpattern: every public header of the library.
 */
#ifndef CPATTERN_H
#define CPATTERN_H

#include "cpattern/common.h"
#include "cpattern/version.h"
#include "cpattern/token.h"
#include "cpattern/chan.h"

#endif /* CPATTERN_H */
