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
#include "cpattern/pool.h"
#include "cpattern/dynpool.h"
#include "cpattern/group.h"
#include "cpattern/pipeline.h"
#include "cpattern/fan.h"
#include "cpattern/parallel.h"

#endif /* CPATTERN_H */
