/*
 * What the library's own modules may rely on about channels beyond what
 * cpattern/chan.h promises. Never installed. chan.c keeps each guarantee
 * below; a module that relies on one includes this header and names the
 * guarantee where it does, so that a change to chan.c that breaks one is
 * found by reading this file, not by a hang.
 */
#ifndef CPAT_CHAN_INTERNAL_H
#define CPAT_CHAN_INTERNAL_H

#include "internal.h"

#include "cpattern/chan.h"

/*
 * CPAT__CHAN_SEND_IS_SEQ_CST. On a buffered channel (capacity > 0), the
 * point at which a send's element arrives is a seq_cst read-modify-write
 * of the channel's tail, made by cpat_chan_try_send(), cpat_chan_send(),
 * cpat_chan_send_until() and cpat_chan_send_many(); the element's bytes are
 * published just after it. A receive (cpat_chan_try_recv(),
 * cpat_chan_recv_many(), ...) reports the channel empty only after a
 * seq_cst load of the tail shows no claimed slot beyond the head: it waits
 * for an element whose slot was claimed but not yet published, never
 * misses it. So, in the single total order of seq_cst operations:
 *
 *   thread A: send (seq_cst RMW of tail);   then a seq_cst load of X
 *   thread B: a seq_cst store or RMW of X;   then try_recv
 *
 * either A's load sees B's store, or B's try_recv finds A's element. The
 * pool's wake-up protocol (a submitter sends then reads the workers'
 * state; a worker registers as parked then re-checks the queue) rests on
 * exactly this.
 */
#define CPAT__CHAN_SEND_IS_SEQ_CST 1

/*
 * Inside chan.c: nwait[dir] counts the waiter records of that side, plus a
 * permanent DOOR_WAITER bit (bit 31) once a door (cpat_chan_fd()) exists
 * for it, so that a completing operation's one load of nwait also tells it
 * to post the door. Code that reads nwait as a count masks that bit.
 */

#endif /* CPAT_CHAN_INTERNAL_H */
