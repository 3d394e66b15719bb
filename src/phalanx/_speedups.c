/* phalanx._speedups: the compiled hot path of phalanx's locks, semaphores and queue rings.
 *
 * Optional: phalanx works without it (the ctypes path in _semlock.py), and
 * ignores it for what it makes when PHALANX_PURE_PYTHON=1.  Semaphores and
 * atomic locks (below) are taken, waited for and given back here, with the
 * GIL released while they sleep; Python is called back only to look at a
 * blocking owner's process and to warn when a dead one's lock is taken over.
 * For guarded locks it does only the uncontended steps, the ones that ctypes
 * makes slow (one foreign call costs ~0.3 us, more than the whole work);
 * everything that may wait, recover a dead owner's lock or raise goes back to
 * the Python methods it was given (``slow_acquire``, ``slow_release``).
 *
 * The slot layout is _semlock.py's (offsets below); the owner record is the
 * 24 bytes (pid, pad, thread ident, process start time) that _semlock packs.
 *
 * Two protocols for a lock, recorded in its slot when it is made:
 *
 * - atomic (every lock made where this module is loaded): the lock is the
 *   64-bit owner word, pid | low 32 bits of the process start time << 32, 0
 *   when free.  Taking it is one compare-and-swap from 0, giving it back one
 *   exchange to 0: a process killed at any instant leaves the lock free or
 *   held by a dead owner on record, whom waiters find (every
 *   OWNER_CHECK_INTERVAL) and take over from with one compare-and-swap of the
 *   dead word, so exactly one of them does.  Waiting happens here too, with
 *   the GIL released, on the semaphore, which a release posts when the
 *   waiters count (atomic) says someone may sleep on it.  The thread ident
 *   and the whole start time follow the word (diagnostics only).
 * - guarded (locks made by a process on the pure-Python path): held when
 *   owner_pid != 0, and that word only changes under the guard, a robust
 *   process-shared pthread mutex; this module does only the uncontended steps.
 *
 * A guard is never waited for here with the GIL held: a busy guard (held
 * for a few instructions by another process, or by a thread of this one
 * between two bytecodes of the Python path) sends the call to the slow path,
 * which waits with the GIL released.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#define SLOT_SEM 0
#define SLOT_OWNER 32
#define SLOT_GUARD 64
#define SLOT_WAITERS 120
#define SLOT_PROTOCOL 124
#define OWNER_RECORD_SIZE 24

#define RECURSIVE_MUTEX 0

#define MODE_GUARDED 0   /* a lock under a robust guard (Linux) */
#define MODE_SEMAPHORE 1 /* a plain counting semaphore (no owner) */
#define MODE_ATOMIC 2    /* a lock that is its owner word (see above) */

#define OWNER_CHECK_INTERVAL 0.25 /* seconds between two looks at a blocking owner */
#define INTERRUPT_CHECK 0.25      /* seconds a wait goes without running signal handlers */

#if defined(__APPLE__) || !defined(EOWNERDEAD)
#define PHALANX_NO_ROBUST 1 /* no robust mutexes: guarded locks stay on the Python path */
#endif

/* The layout this file assumes (_semlock.py's): a build that does not match fails,
   and phalanx runs its pure-Python path. */
_Static_assert(sizeof(sem_t) <= 32, "sem_t does not fit its 32 bytes");
_Static_assert(sizeof(pthread_mutex_t) <= 56, "pthread_mutex_t does not fit its 56 bytes");

#define API_VERSION 3 /* _fast.py refuses a module of another version (a stale build) */

/* Bumped in every forked child (pthread_atfork), whoever forks: a lock sees a new
   value and forgets its hold count and owner record, which were its parent's. */
static unsigned long fork_generation = 0;

static void
on_fork_child(void)
{
    fork_generation++;
}

typedef struct {
    PyObject_HEAD
    char *slot;
    int kind;
    int mode;
    int maxvalue;
    long held;               /* this process's acquisitions not yet released */
    unsigned long last_tid;  /* the thread of the last acquisition */
    unsigned long generation; /* fork_generation when held and record were last right */
    int has_record;           /* record holds this process's pid and start time */
    char record[OWNER_RECORD_SIZE];
    PyObject *slow_acquire;  /* (block=True, timeout=None) -> bool; keeps no count */
    PyObject *slow_release;  /* () -> None; keeps no count (guarded locks only) */
    PyObject *owner_record;  /* (tid) -> bytes of OWNER_RECORD_SIZE */
    PyObject *not_owned;     /* the exception class for releasing an RLock not owned */
    PyObject *owner_dead;    /* atomic: (owner word) -> its pid if that process is gone, else 0 */
    PyObject *took_over;     /* atomic: (dead pid) -> None, warns (may raise) */
    uint64_t word;           /* atomic: this process's owner word, from the record */
    Py_buffer view;          /* of the mapping the slot lives in: held, so it stays mapped */
    int has_view;
} FastLock;

static inline int
take_guard(pthread_mutex_t *guard)
{
    /* 0: ours; -1: busy (the caller goes the slow way). */
    int rc = pthread_mutex_trylock(guard);
    if (rc == 0)
        return 0;
#ifndef PHALANX_NO_ROBUST
    if (rc == EOWNERDEAD) {
        /* Its holder died with it: ours now, and what it guards is consistent
           at every step (see _semlock's docstring). */
        pthread_mutex_consistent(guard);
        return 0;
    }
#endif
    return -1;
}

static inline void
check_fork(FastLock *self)
{
    if (self->generation != fork_generation) {
        self->generation = fork_generation;
        self->held = 0;
        self->has_record = 0;
    }
}

static int
set_record(FastLock *self, unsigned long tid)
{
    /* pid (int32), padding, thread ident (u64), process start time (u64) */
    if (self->has_record) {
        uint64_t tid64 = (uint64_t)tid;
        memcpy(self->record + 8, &tid64, sizeof tid64);
        return 0;
    }
    PyObject *tid_obj = PyLong_FromUnsignedLong(tid);
    if (tid_obj == NULL)
        return -1;
    PyObject *record = PyObject_CallOneArg(self->owner_record, tid_obj);
    Py_DECREF(tid_obj);
    if (record == NULL)
        return -1;
    if (!PyBytes_Check(record) || PyBytes_GET_SIZE(record) != OWNER_RECORD_SIZE) {
        Py_DECREF(record);
        PyErr_SetString(PyExc_TypeError, "owner_record must return 24 bytes");
        return -1;
    }
    memcpy(self->record, PyBytes_AS_STRING(record), OWNER_RECORD_SIZE);
    Py_DECREF(record);
    uint32_t pid;
    uint64_t start;
    memcpy(&pid, self->record, sizeof pid);
    memcpy(&start, self->record + 16, sizeof start);
    self->word = (uint64_t)pid | (start << 32);
    self->has_record = 1;
    return 0;
}

/* -- the atomic protocol ------------------------------------------------------------ */

static inline uint64_t *
owner_word(FastLock *self)
{
    return (uint64_t *)(self->slot + SLOT_OWNER);
}

static inline int32_t *
waiters_word(FastLock *self)
{
    return (int32_t *)(self->slot + SLOT_WAITERS);
}

static inline int
claim(FastLock *self, uint64_t expected)
{
    /* 1 if the owner word went from expected to ours (then the lock is ours). */
    if (!__atomic_compare_exchange_n(owner_word(self), &expected, self->word, 0,
                                     __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
        return 0;
    memcpy(self->slot + SLOT_OWNER + 8, self->record + 8, 16); /* thread, start: diagnostics */
    return 1;
}

static inline void
cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* A held lock is usually held for a few hundred nanoseconds (a `with lock:`
   around a few bytecodes) by a process running on another CPU: watching the
   word for about a microsecond takes it more often than not, where sleeping
   and being woken costs two system calls on each side.  Longer, the holder is
   likely off its CPU, and the waiter sleeps. */
#ifndef SPINS
#define SPINS 100
#endif

static int
claim_spinning(FastLock *self)
{
    for (int i = 0; i < SPINS; i++) {
        cpu_relax();
        if (__atomic_load_n(owner_word(self), __ATOMIC_RELAXED) == 0 && claim(self, 0))
            return 1;
    }
    return 0;
}

static inline uint64_t
give_back(FastLock *self)
{
    /* Free the lock; wake a sleeper if one may sleep.  The previous owner word. */
    uint64_t was = __atomic_exchange_n(owner_word(self), (uint64_t)0, __ATOMIC_SEQ_CST);
    if (was != 0 && __atomic_load_n(waiters_word(self), __ATOMIC_SEQ_CST) > 0) {
        /* A post nobody has taken yet will wake a sleeper (who then looks at the
           word, which is 0 from here on): one is enough, so that the count stays
           small even if a registered waiter was killed and never takes its posts. */
        sem_t *sem = (sem_t *)(self->slot + SLOT_SEM);
        int value = 0;
        if (sem_getvalue(sem, &value) != 0 || value <= 0)
            sem_post(sem);
    }
    return was;
}

static double
monotonic_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int
sleep_on(sem_t *sem, double seconds)
{
    /* sem_timedwait for at most `seconds`, the GIL released: 0 (a unit taken),
       or the errno (ETIMEDOUT, EINTR, ...). */
#ifdef __APPLE__
    /* No sem_timedwait there: look every millisecond. */
    double until = monotonic_now() + seconds;
    int err = ETIMEDOUT;
    Py_BEGIN_ALLOW_THREADS
    for (;;) {
        if (sem_trywait(sem) == 0) {
            err = 0;
            break;
        }
        if (errno != EAGAIN) {
            err = errno;
            break;
        }
        if (monotonic_now() >= until)
            break;
        struct timespec nap = {0, 1000000L};
        if (nanosleep(&nap, NULL) != 0 && errno == EINTR) {
            err = EINTR;
            break;
        }
    }
    Py_END_ALLOW_THREADS
    return err;
#else
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double whole = (double)(time_t)seconds;
    ts.tv_sec += (time_t)seconds;
    ts.tv_nsec += (long)((seconds - whole) * 1e9);
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec += 1;
        ts.tv_nsec -= 1000000000L;
    }
    int rc, err = 0;
    Py_BEGIN_ALLOW_THREADS
    rc = sem_timedwait(sem, &ts);
    if (rc != 0)
        err = errno;
    Py_END_ALLOW_THREADS
    return rc == 0 ? 0 : err;
#endif
}

static int
parse_acquire(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, int *block,
              double *timeout)
{
    /* acquire(block=True, timeout=None): *timeout < 0 means none (wait forever). */
    if (nargs > 2) {
        PyErr_Format(PyExc_TypeError, "acquire() takes at most 2 arguments (%zd given)", nargs);
        return -1;
    }
    PyObject *block_obj = nargs >= 1 ? args[0] : NULL;
    PyObject *timeout_obj = nargs >= 2 ? args[1] : NULL;
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, i);
        if (PyUnicode_CompareWithASCIIString(name, "block") == 0 && block_obj == NULL)
            block_obj = args[nargs + i];
        else if (PyUnicode_CompareWithASCIIString(name, "timeout") == 0 && timeout_obj == NULL)
            timeout_obj = args[nargs + i];
        else {
            PyErr_Format(PyExc_TypeError, "acquire() got an unexpected or repeated argument %R",
                         name);
            return -1;
        }
    }
    *block = 1;
    if (block_obj != NULL && (*block = PyObject_IsTrue(block_obj)) < 0)
        return -1;
    *timeout = -1.0;
    if (*block && timeout_obj != NULL && timeout_obj != Py_None) {
        double t = PyFloat_AsDouble(timeout_obj);
        if (t == -1.0 && PyErr_Occurred())
            return -1;
        *timeout = t < 0 ? 0.0 : t;
    }
    return 0;
}

static int
take_over_if_dead(FastLock *self, uint64_t seen)
{
    /* 1: the owner `seen` was dead and the lock is ours now (warned); 0: not;
       -1: an exception (the lock not ours). */
    PyObject *word = PyLong_FromUnsignedLongLong(seen);
    if (word == NULL)
        return -1;
    PyObject *dead = PyObject_CallOneArg(self->owner_dead, word);
    Py_DECREF(word);
    if (dead == NULL)
        return -1;
    int is_dead = PyObject_IsTrue(dead);
    if (is_dead <= 0 || !claim(self, seen)) {
        Py_DECREF(dead);
        return is_dead < 0 ? -1 : 0; /* alive, or another waiter took it over first */
    }
    /* Ours, on record, before the warning (which may block, or raise): a
       recoverer that dies in turn is taken over from like any owner. */
    PyObject *warned = PyObject_CallOneArg(self->took_over, dead);
    Py_DECREF(dead);
    if (warned == NULL) {
        /* The program made the warning an error: hand the lock back first, so
           that nobody waits for a dead owner again. */
        give_back(self);
        return -1;
    }
    Py_DECREF(warned);
    return 1;
}

static PyObject *
acquire_atomic(FastLock *self, unsigned long tid, PyObject *const *args, Py_ssize_t nargs,
               PyObject *kwnames)
{
    /* (Not a re-acquisition by the owning thread of an RLock: the caller counted that.) */
    int block;
    double timeout;
    if (parse_acquire(args, nargs, kwnames, &block, &timeout) < 0)
        return NULL;
    if (set_record(self, tid) < 0)
        return NULL;
    if (!claim(self, 0)) {
        if (!block)
            Py_RETURN_FALSE;
        if (claim_spinning(self))
            goto taken;
        /* Registered as a waiter from before the next look at the word to the
           last: a release that comes after that look sees the count and posts. */
        int32_t *waiters = waiters_word(self);
        sem_t *sem = (sem_t *)(self->slot + SLOT_SEM);
        double now = monotonic_now();
        double deadline = timeout < 0 ? -1.0 : now + timeout;
        double checked = now;
        int got = 0;
        __atomic_add_fetch(waiters, 1, __ATOMIC_SEQ_CST);
        for (;;) {
            uint64_t seen = 0;
            if (claim(self, 0)) {
                got = 1;
                break;
            }
            now = monotonic_now();
            if (now - checked >= OWNER_CHECK_INTERVAL) {
                checked = now;
                seen = __atomic_load_n(owner_word(self), __ATOMIC_SEQ_CST);
                if (seen != 0) {
                    got = take_over_if_dead(self, seen);
                    if (got != 0)
                        break;
                }
                continue; /* the word may have changed meanwhile: look again */
            }
            if (deadline >= 0 && now >= deadline)
                break;
            double until = checked + OWNER_CHECK_INTERVAL;
            if (deadline >= 0 && deadline < until)
                until = deadline;
            sleep_on(sem, until - now);
            /* Whatever woke us: Python's signal handlers run here (a Ctrl-C that
               another thread of this process received too, within a slice). */
            if (PyErr_CheckSignals() < 0) {
                got = -1;
                break;
            }
        }
        __atomic_sub_fetch(waiters, 1, __ATOMIC_SEQ_CST);
        if (got < 0)
            return NULL;
        if (!got)
            Py_RETURN_FALSE;
    }
taken:
    self->held++;
    self->last_tid = tid;
    Py_RETURN_TRUE;
}

static PyObject *
acquire_semaphore_waiting(FastLock *self, unsigned long tid, PyObject *const *args,
                          Py_ssize_t nargs, PyObject *kwnames)
{
    /* No unit at once: wait for one here, the GIL released (EINTR: signal handlers run). */
    int block;
    double timeout;
    if (parse_acquire(args, nargs, kwnames, &block, &timeout) < 0)
        return NULL;
    sem_t *sem = (sem_t *)(self->slot + SLOT_SEM);
    if (sem_trywait(sem) != 0) {
        if (!block)
            Py_RETURN_FALSE;
        double deadline = timeout < 0 ? -1.0 : monotonic_now() + timeout;
        for (;;) {
            /* In slices: Python's signal handlers run between two (a Ctrl-C that
               another thread of this process received too). */
            double slice = INTERRUPT_CHECK;
            if (deadline >= 0) {
                double left = deadline - monotonic_now();
                if (left <= 0) {
                    if (sem_trywait(sem) == 0)
                        break;
                    Py_RETURN_FALSE;
                }
                if (left < slice)
                    slice = left;
            }
            int err = sleep_on(sem, slice);
            if (err == 0)
                break;
            if (err != EINTR && err != ETIMEDOUT && err != EAGAIN) {
                errno = err;
                return PyErr_SetFromErrno(PyExc_OSError);
            }
            if (PyErr_CheckSignals() < 0)
                return NULL;
        }
    }
    self->held++;
    self->last_tid = tid;
    Py_RETURN_TRUE;
}

static PyObject *
call_slow_acquire(FastLock *self, unsigned long tid, PyObject *const *args, Py_ssize_t nargs,
                  PyObject *kwnames)
{
    PyObject *got = PyObject_Vectorcall(self->slow_acquire, args, nargs, kwnames);
    if (got == NULL)
        return NULL;
    int taken = PyObject_IsTrue(got);
    Py_DECREF(got);
    if (taken < 0)
        return NULL;
    if (!taken)
        Py_RETURN_FALSE;
    /* The count, here: one step the other threads of this process cannot split. */
    self->held++;
    self->last_tid = tid;
    Py_RETURN_TRUE;
}

static int
arguments_named_right(Py_ssize_t nargs, PyObject *kwnames)
{
    /* acquire(block=True, timeout=None): at most two, by these names, once each. */
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    if (nargs + nkw > 2)
        return 0;
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, i);
        if (PyUnicode_CompareWithASCIIString(name, "block") == 0) {
            if (nargs >= 1)
                return 0; /* given twice */
        }
        else if (PyUnicode_CompareWithASCIIString(name, "timeout") != 0)
            return 0;
    }
    return 1;
}

static PyObject *
FastLock_acquire(FastLock *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    /* A free lock or a unit is taken whatever the values of block and timeout.
       Otherwise semaphores and atomic locks wait here; a guarded lock goes to the
       slow path with the arguments, which parses them (and raises for wrong
       ones) and waits. */
    unsigned long tid = PyThread_get_thread_ident();
    check_fork(self);
    if (self->mode == MODE_ATOMIC && nargs == 0 && kwnames == NULL && self->has_record &&
        !(self->held && self->kind == RECURSIVE_MUTEX && self->last_tid == tid)) {
        /* The hot path of `with lock:` (no arguments), a free lock: one compare-and-swap. */
        memcpy(self->record + 8, &(uint64_t){(uint64_t)tid}, sizeof(uint64_t));
        if (claim(self, 0)) {
            self->held++;
            self->last_tid = tid;
            Py_RETURN_TRUE;
        }
    }
    if (!arguments_named_right(nargs, kwnames)) {
        if (self->mode != MODE_GUARDED) {
            int block;
            double timeout;
            parse_acquire(args, nargs, kwnames, &block, &timeout); /* raises TypeError */
            return NULL;
        }
        return call_slow_acquire(self, tid, args, nargs, kwnames); /* raises TypeError */
    }
    if (self->held && self->kind == RECURSIVE_MUTEX && self->last_tid == tid) {
        self->held++;
        Py_RETURN_TRUE;
    }
    if (self->mode == MODE_SEMAPHORE) {
        if (sem_trywait((sem_t *)(self->slot + SLOT_SEM)) == 0) {
            self->held++;
            self->last_tid = tid;
            Py_RETURN_TRUE;
        }
        return acquire_semaphore_waiting(self, tid, args, nargs, kwnames);
    }
    if (self->mode == MODE_ATOMIC)
        return acquire_atomic(self, tid, args, nargs, kwnames);
#ifdef PHALANX_NO_ROBUST
    return call_slow_acquire(self, tid, args, nargs, kwnames);
#else
    if (set_record(self, tid) < 0)
        return NULL;
    pthread_mutex_t *guard = (pthread_mutex_t *)(self->slot + SLOT_GUARD);
    if (take_guard(guard) != 0)
        return call_slow_acquire(self, tid, args, nargs, kwnames);
    volatile int32_t *owner_pid = (volatile int32_t *)(self->slot + SLOT_OWNER);
    if (*owner_pid == 0) {
        /* The commit: held, by us. */
        memcpy(self->slot + SLOT_OWNER, self->record, OWNER_RECORD_SIZE);
        pthread_mutex_unlock(guard);
        self->held++;
        self->last_tid = tid;
        Py_RETURN_TRUE;
    }
    pthread_mutex_unlock(guard);
    return call_slow_acquire(self, tid, args, nargs, kwnames);
#endif
}

static PyObject *
released_too_many_times(void)
{
    PyErr_SetString(PyExc_ValueError, "semaphore or lock released too many times");
    return NULL;
}

static PyObject *
FastLock_release(FastLock *self, PyObject *Py_UNUSED(ignored))
{
    check_fork(self);
    if (self->kind == RECURSIVE_MUTEX) {
        if (!(self->held > 0 && self->last_tid == PyThread_get_thread_ident())) {
            PyErr_SetString(self->not_owned,
                            "attempt to release recursive lock not owned by thread");
            return NULL;
        }
        if (self->held > 1) {
            self->held--;
            Py_RETURN_NONE;
        }
    }
    if (self->mode == MODE_ATOMIC) {
        if (give_back(self) == 0)
            return released_too_many_times();
        if (self->held)
            self->held--;
        Py_RETURN_NONE;
    }
    sem_t *sem = (sem_t *)(self->slot + SLOT_SEM);
    if (self->mode == MODE_SEMAPHORE) {
        if (self->maxvalue != -1) {
            int value = 0;
            if (sem_getvalue(sem, &value) != 0)
                return PyErr_SetFromErrno(PyExc_OSError);
            if (value >= self->maxvalue)
                return released_too_many_times();
        }
        if (sem_post(sem) != 0) {
            int err = errno;
            return PyErr_Format(PyExc_OSError, "sem_post: %s", strerror(err));
        }
        if (self->held)
            self->held--;
        Py_RETURN_NONE;
    }
#ifdef PHALANX_NO_ROBUST
    PyErr_SetString(PyExc_RuntimeError, "guarded locks need robust mutexes");
    return NULL;
#else
    pthread_mutex_t *guard = (pthread_mutex_t *)(self->slot + SLOT_GUARD);
    if (take_guard(guard) != 0) {
        /* Busy: the Python path waits for the guard with the GIL released. */
        PyObject *done = PyObject_CallNoArgs(self->slow_release);
        if (done == NULL)
            return NULL;
        Py_DECREF(done);
        if (self->held)
            self->held--;
        Py_RETURN_NONE;
    }
    volatile int32_t *owner_pid = (volatile int32_t *)(self->slot + SLOT_OWNER);
    if (*owner_pid == 0) {
        pthread_mutex_unlock(guard);
        return released_too_many_times();
    }
    *owner_pid = 0; /* the commit: free */
    int32_t waiters = *(volatile int32_t *)(self->slot + SLOT_WAITERS);
    pthread_mutex_unlock(guard);
    if (self->held)
        self->held--;
    if (waiters)
        sem_post(sem);
    Py_RETURN_NONE;
#endif
}

static PyObject *
FastLock_forget(FastLock *self, PyObject *Py_UNUSED(ignored))
{
    /* After fork: this process holds nothing, and its owner record is another. */
    self->held = 0;
    self->has_record = 0;
    Py_RETURN_NONE;
}

static int
FastLock_init(FastLock *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"buffer", "offset", "kind", "mode", "maxvalue", "slow_acquire",
                             "slow_release", "owner_record", "not_owned", "owner_dead",
                             "took_over", NULL};
    PyObject *buffer, *slow_acquire, *slow_release, *owner_record, *not_owned;
    PyObject *owner_dead = Py_None, *took_over = Py_None;
    Py_ssize_t offset;
    int kind, mode, maxvalue;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OniiiOOOO|OO", kwlist, &buffer, &offset, &kind,
                                     &mode, &maxvalue, &slow_acquire, &slow_release,
                                     &owner_record, &not_owned, &owner_dead, &took_over))
        return -1;
    if (mode == MODE_ATOMIC && !(PyCallable_Check(owner_dead) && PyCallable_Check(took_over))) {
        PyErr_SetString(PyExc_TypeError, "an atomic lock needs owner_dead and took_over");
        return -1;
    }
    if (mode == MODE_GUARDED && !(PyCallable_Check(slow_acquire) && PyCallable_Check(slow_release))) {
        PyErr_SetString(PyExc_TypeError, "a guarded lock needs slow_acquire and slow_release");
        return -1;
    }
    if (!PyExceptionClass_Check(not_owned)) {
        PyErr_SetString(PyExc_TypeError, "not_owned must be an exception class");
        return -1;
    }
    if (mode != MODE_GUARDED && mode != MODE_SEMAPHORE && mode != MODE_ATOMIC) {
        PyErr_Format(PyExc_ValueError, "unknown mode %d", mode);
        return -1;
    }
#ifdef PHALANX_NO_ROBUST
    if (mode == MODE_GUARDED) {
        PyErr_SetString(PyExc_ValueError, "guarded locks need robust mutexes");
        return -1;
    }
#endif
    if (self->has_view) {
        PyErr_SetString(PyExc_RuntimeError, "FastLock is initialised once");
        return -1;
    }
    if (PyObject_GetBuffer(buffer, &self->view, PyBUF_WRITABLE) < 0)
        return -1;
    self->has_view = 1;
    if (offset < 0 || self->view.len < 128 || offset > self->view.len - 128) {
        PyErr_SetString(PyExc_ValueError, "slot out of the buffer");
        return -1;
    }
    if ((((uintptr_t)self->view.buf + (uintptr_t)offset) & 7) != 0) {
        PyErr_SetString(PyExc_ValueError, "slot not 8-byte aligned");
        return -1;
    }
    self->slot = (char *)self->view.buf + offset;
    self->kind = kind;
    self->mode = mode;
    self->maxvalue = maxvalue;
    self->held = 0;
    self->last_tid = 0;
    self->generation = fork_generation;
    self->has_record = 0;
    Py_INCREF(not_owned);
    Py_XSETREF(self->not_owned, not_owned);
    Py_INCREF(slow_acquire);
    Py_XSETREF(self->slow_acquire, slow_acquire);
    Py_INCREF(slow_release);
    Py_XSETREF(self->slow_release, slow_release);
    Py_INCREF(owner_record);
    Py_XSETREF(self->owner_record, owner_record);
    Py_INCREF(owner_dead);
    Py_XSETREF(self->owner_dead, owner_dead);
    Py_INCREF(took_over);
    Py_XSETREF(self->took_over, took_over);
    return 0;
}

static int
FastLock_traverse(FastLock *self, visitproc visit, void *arg)
{
    Py_VISIT(self->slow_acquire);
    Py_VISIT(self->slow_release);
    Py_VISIT(self->owner_record);
    Py_VISIT(self->not_owned);
    Py_VISIT(self->owner_dead);
    Py_VISIT(self->took_over);
    return 0;
}

static int
FastLock_clear(FastLock *self)
{
    Py_CLEAR(self->slow_acquire);
    Py_CLEAR(self->slow_release);
    Py_CLEAR(self->owner_record);
    Py_CLEAR(self->not_owned);
    Py_CLEAR(self->owner_dead);
    Py_CLEAR(self->took_over);
    return 0;
}

static void
FastLock_dealloc(FastLock *self)
{
    PyObject_GC_UnTrack(self);
    FastLock_clear(self);
    if (self->has_view) {
        self->has_view = 0;
        self->slot = NULL;
        PyBuffer_Release(&self->view);
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef FastLock_methods[] = {
    {"acquire", (PyCFunction)(void (*)(void))FastLock_acquire, METH_FASTCALL | METH_KEYWORDS,
     "acquire($self, /, block=True, timeout=None)\n--\n\n"
     "Take the lock or a unit; the slow path waits."},
    {"release", (PyCFunction)FastLock_release, METH_NOARGS,
     "release($self, /)\n--\n\nGive the lock or a unit back."},
    {"forget", (PyCFunction)FastLock_forget, METH_NOARGS,
     "forget(): after fork, hold nothing and rebuild the owner record."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef FastLock_members[] = {
    {"held", T_LONG, offsetof(FastLock, held), 0, "acquisitions not yet released"},
    {"last_tid", T_ULONG, offsetof(FastLock, last_tid), 0, "the thread of the last acquisition"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject FastLockType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "phalanx._speedups.FastLock",
    .tp_doc = "The uncontended path of one phalanx SemLock slot.",
    .tp_basicsize = sizeof(FastLock),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)FastLock_init,
    .tp_dealloc = (destructor)FastLock_dealloc,
    .tp_traverse = (traverseproc)FastLock_traverse,
    .tp_clear = (inquiry)FastLock_clear,
    .tp_methods = FastLock_methods,
    .tp_members = FastLock_members,
};


/* -- the queue ring's hot path (see _ring.py for the layout and the protocol) ---------- */

#define RING_DOORBELL 128
#define RING_WORDS_W 192 /* tail, puts, next_seq, room_sleepers */
#define RING_WORDS_R 256 /* head, gets, sleepers */
#define RING_WORDS_C 320 /* capacity, maxsize */
#define RING_READERS_MUTEX 64
#define RING_LEN_SIZE 4

#define RING_SLOW (-1)    /* not here: the Python path does it (it locks again) */
#define RING_DEAD (-2)    /* the mutex is ours, from a holder that died: Python repairs */

typedef struct {
    PyObject_HEAD
    char *header; /* the ring's header page (never moves) */
    char *data;   /* its data, as this process maps it now */
    uint64_t capacity;
    uint64_t maxsize;
    int shared; /* one mutex for both sides (no total store order) */
    PyObject *keep; /* what keeps the header mapped (the Ring's mmap) */
} FastRing;

static inline uint64_t *
ring_word(FastRing *self, int base, int index)
{
    return (uint64_t *)(self->header + base) + index;
}

static inline int
ring_trylock(pthread_mutex_t *mutex)
{
    /* 0: ours; RING_SLOW: busy; RING_DEAD: ours, its last holder died. */
    int rc = pthread_mutex_trylock(mutex);
    if (rc == 0)
        return 0;
#ifndef PHALANX_NO_ROBUST
    if (rc == EOWNERDEAD)
        return RING_DEAD;
#endif
    return RING_SLOW;
}

static PyObject *
FastRing_put(FastRing *self, PyObject *message)
{
    /* 1: appended; 0: a bounded queue is full; RING_SLOW / RING_DEAD (see above). */
#ifdef PHALANX_NO_ROBUST
    return PyLong_FromLong(RING_SLOW);
#else
    if (!PyBytes_CheckExact(message) || self->data == NULL)
        return PyLong_FromLong(RING_SLOW);
    Py_ssize_t length = PyBytes_GET_SIZE(message);
    uint64_t size = RING_LEN_SIZE + (uint64_t)length;
    pthread_mutex_t *mutex = (pthread_mutex_t *)self->header;
    int locked = ring_trylock(mutex);
    if (locked != 0)
        return PyLong_FromLong(locked);
    uint64_t *tail_word = ring_word(self, RING_WORDS_W, 0);
    uint64_t *puts_word = ring_word(self, RING_WORDS_W, 1);
    uint64_t tail = *tail_word;
    long result = 1;
    if (self->maxsize &&
        *puts_word - __atomic_load_n(ring_word(self, RING_WORDS_R, 1), __ATOMIC_ACQUIRE) >=
            self->maxsize)
        result = 0;
    else {
        uint64_t pos = tail & (self->capacity - 1);
        uint64_t head = __atomic_load_n(ring_word(self, RING_WORDS_R, 0), __ATOMIC_ACQUIRE);
        if (length > (Py_ssize_t)((1u << 30) - 1) || pos + size > self->capacity ||
            size > self->capacity - (tail - head) ||
            __atomic_load_n(ring_word(self, RING_WORDS_C, 0), __ATOMIC_ACQUIRE) != self->capacity)
            result = RING_SLOW; /* wraps, grows, or a new capacity to map */
        else {
            uint32_t word = (uint32_t)length; /* kind 0: data */
            memcpy(self->data + pos, &word, RING_LEN_SIZE);
            memcpy(self->data + pos + RING_LEN_SIZE, PyBytes_AS_STRING(message), (size_t)length);
            __atomic_store_n(tail_word, tail + size, __ATOMIC_RELEASE); /* the commit */
            *puts_word += 1;
        }
    }
    pthread_mutex_unlock(mutex); /* a full barrier, before the sleepers are read */
    if (result == 1 && __atomic_load_n(ring_word(self, RING_WORDS_R, 2), __ATOMIC_SEQ_CST)) {
        sem_t *doorbell = (sem_t *)(self->header + RING_DOORBELL);
        int value = 0;
        if (sem_getvalue(doorbell, &value) != 0 || value <= 0)
            sem_post(doorbell);
    }
    return PyLong_FromLong(result);
#endif
}

static PyObject *
FastRing_get(FastRing *self, PyObject *Py_UNUSED(ignored))
{
    /* The oldest message if it is data in place (bytes); None if the ring is empty;
       else RING_SLOW / RING_DEAD. */
#ifdef PHALANX_NO_ROBUST
    return PyLong_FromLong(RING_SLOW);
#else
    if (self->data == NULL)
        return PyLong_FromLong(RING_SLOW);
    uint64_t *head_word = ring_word(self, RING_WORDS_R, 0);
    uint64_t *tail_word = ring_word(self, RING_WORDS_W, 0);
    if (__atomic_load_n(head_word, __ATOMIC_ACQUIRE) ==
        __atomic_load_n(tail_word, __ATOMIC_ACQUIRE))
        Py_RETURN_NONE; /* a racy peek, but a wrong one only costs a lock round */
    pthread_mutex_t *mutex =
        (pthread_mutex_t *)(self->header + (self->shared ? 0 : RING_READERS_MUTEX));
    int locked = ring_trylock(mutex);
    if (locked != 0)
        return PyLong_FromLong(locked);
    PyObject *result = NULL;
    uint64_t head = *head_word;
    if (head == __atomic_load_n(tail_word, __ATOMIC_ACQUIRE)) {
        result = Py_None;
        Py_INCREF(result);
    }
    else if (__atomic_load_n(ring_word(self, RING_WORDS_C, 0), __ATOMIC_ACQUIRE) ==
             self->capacity) {
        uint64_t pos = head & (self->capacity - 1);
        if (self->capacity - pos >= RING_LEN_SIZE) {
            uint32_t word;
            memcpy(&word, self->data + pos, RING_LEN_SIZE);
            uint64_t end = pos + RING_LEN_SIZE + word;
            if (!(word >> 30) && end <= self->capacity) { /* data, in place */
                result = PyBytes_FromStringAndSize(self->data + pos + RING_LEN_SIZE, word);
                if (result != NULL) {
                    __atomic_store_n(head_word, head + RING_LEN_SIZE + word,
                                     __ATOMIC_RELEASE); /* the commit */
                    *ring_word(self, RING_WORDS_R, 1) += 1;
                }
                pthread_mutex_unlock(mutex);
                return result; /* (NULL: MemoryError, nothing taken) */
            }
        }
    }
    pthread_mutex_unlock(mutex);
    return result != NULL ? result : PyLong_FromLong(RING_SLOW);
#endif
}

static PyObject *
FastRing_set_data(FastRing *self, PyObject *const *args, Py_ssize_t nargs)
{
    /* set_data(address, capacity): the data as this process maps it now. */
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "set_data(address, capacity)");
        return NULL;
    }
    void *data = PyLong_AsVoidPtr(args[0]);
    if (data == NULL && PyErr_Occurred())
        return NULL;
    unsigned long long capacity = PyLong_AsUnsignedLongLong(args[1]);
    if (capacity == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    if (capacity == 0 || (capacity & (capacity - 1))) {
        PyErr_SetString(PyExc_ValueError, "capacity must be a power of two");
        return NULL;
    }
    self->data = data;
    self->capacity = capacity;
    Py_RETURN_NONE;
}

static int
FastRing_init(FastRing *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"header", "address", "shared", "maxsize", NULL};
    PyObject *keep, *address;
    int shared;
    unsigned long long maxsize;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOpK", kwlist, &keep, &address, &shared,
                                     &maxsize))
        return -1;
    void *header = PyLong_AsVoidPtr(address);
    if (header == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "the header's address is NULL");
        return -1;
    }
    self->header = header;
    self->data = NULL;
    self->capacity = 0;
    self->maxsize = maxsize;
    self->shared = shared;
    Py_INCREF(keep);
    Py_XSETREF(self->keep, keep);
    return 0;
}

static int
FastRing_traverse(FastRing *self, visitproc visit, void *arg)
{
    Py_VISIT(self->keep);
    return 0;
}

static int
FastRing_clear(FastRing *self)
{
    Py_CLEAR(self->keep);
    return 0;
}

static void
FastRing_dealloc(FastRing *self)
{
    PyObject_GC_UnTrack(self);
    FastRing_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef FastRing_methods[] = {
    {"put", (PyCFunction)FastRing_put, METH_O,
     "put($self, message, /)\n--\n\n1: appended; 0: full; -1: the Python path; -2: repair."},
    {"get", (PyCFunction)FastRing_get, METH_NOARGS,
     "get($self, /)\n--\n\nbytes; None if empty; -1: the Python path; -2: repair."},
    {"set_data", (PyCFunction)(void (*)(void))FastRing_set_data, METH_FASTCALL,
     "set_data($self, address, capacity, /)\n--\n\nWhere the data is mapped now."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject FastRingType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "phalanx._speedups.FastRing",
    .tp_doc = "The hot path of a phalanx queue ring: a small data record in, or out.",
    .tp_basicsize = sizeof(FastRing),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)FastRing_init,
    .tp_dealloc = (destructor)FastRing_dealloc,
    .tp_traverse = (traverseproc)FastRing_traverse,
    .tp_clear = (inquiry)FastRing_clear,
    .tp_methods = FastRing_methods,
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "phalanx._speedups",
    .m_doc = "The compiled hot path of phalanx's locks (optional; see _semlock.py).",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    if (PyType_Ready(&FastLockType) < 0 || PyType_Ready(&FastRingType) < 0)
        return NULL;
    if (pthread_atfork(NULL, NULL, on_fork_child) != 0) {
        PyErr_SetString(PyExc_OSError, "pthread_atfork failed");
        return NULL;
    }
    PyObject *module = PyModule_Create(&speedups_module);
    if (module == NULL)
        return NULL;
    Py_INCREF(&FastLockType);
    if (PyModule_AddObject(module, "FastLock", (PyObject *)&FastLockType) < 0) {
        Py_DECREF(&FastLockType);
        Py_DECREF(module);
        return NULL;
    }
    Py_INCREF(&FastRingType);
    if (PyModule_AddObject(module, "FastRing", (PyObject *)&FastRingType) < 0) {
        Py_DECREF(&FastRingType);
        Py_DECREF(module);
        return NULL;
    }
    if (PyModule_AddIntConstant(module, "MODE_GUARDED", MODE_GUARDED) < 0 ||
        PyModule_AddIntConstant(module, "MODE_SEMAPHORE", MODE_SEMAPHORE) < 0 ||
        PyModule_AddIntConstant(module, "MODE_ATOMIC", MODE_ATOMIC) < 0 ||
        PyModule_AddIntConstant(module, "API_VERSION", API_VERSION) < 0 ||
        PyModule_AddIntConstant(module, "HAVE_GUARDED",
#ifdef PHALANX_NO_ROBUST
                                0
#else
                                1
#endif
                                ) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
