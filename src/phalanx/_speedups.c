/* phalanx._speedups: the compiled hot path of phalanx's locks and semaphores.
 *
 * Optional: phalanx works without it (the ctypes path in _semlock.py), and
 * ignores it when PHALANX_PURE_PYTHON=1.  It does only the uncontended steps,
 * the ones that ctypes makes slow (one foreign call costs ~0.3 us, more than
 * the whole work): taking a free lock, releasing a held one, taking or giving
 * back a semaphore unit.  Everything that may wait, recover a dead owner's
 * lock or raise goes back to the Python methods it was given (``slow_acquire``,
 * ``slow_release``), which keep the one implementation of those rules.
 *
 * The slot layout is _semlock.py's (offsets below); the owner record is the
 * 24 bytes (pid, pad, thread ident, process start time) that _semlock packs.
 * A guarded lock is held when owner_pid != 0, and that word only changes
 * under the guard, a robust process-shared pthread mutex; a release posts the
 * semaphore when the waiters count says someone sleeps on it.
 *
 * The guard is never waited for here with the GIL held: a busy guard (held
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

#define SLOT_SEM 0
#define SLOT_OWNER 32
#define SLOT_GUARD 64
#define SLOT_WAITERS 120
#define OWNER_RECORD_SIZE 24

#define RECURSIVE_MUTEX 0

#define MODE_GUARDED 0   /* a lock under a robust guard (Linux) */
#define MODE_SEMAPHORE 1 /* a plain counting semaphore (no owner) */

#if defined(__APPLE__) || !defined(EOWNERDEAD)
#define PHALANX_NO_ROBUST 1 /* no robust mutexes: guarded locks stay on the Python path */
#endif

/* The layout this file assumes (_semlock.py's): a build that does not match fails,
   and phalanx runs its pure-Python path. */
_Static_assert(sizeof(sem_t) <= 32, "sem_t does not fit its 32 bytes");
_Static_assert(sizeof(pthread_mutex_t) <= 56, "pthread_mutex_t does not fit its 56 bytes");

#define API_VERSION 2 /* _fast.py refuses a module of another version (a stale build) */

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
    self->has_record = 1;
    return 0;
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
    /* A free lock is taken whatever the values of block and timeout; anything
       else goes to the slow path with the arguments, which parses them (and
       raises for wrong ones) and waits. */
    unsigned long tid = PyThread_get_thread_ident();
    check_fork(self);
    if (!arguments_named_right(nargs, kwnames))
        return call_slow_acquire(self, tid, args, nargs, kwnames); /* raises TypeError */
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
        return call_slow_acquire(self, tid, args, nargs, kwnames);
    }
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
                             "slow_release", "owner_record", "not_owned", NULL};
    PyObject *buffer, *slow_acquire, *slow_release, *owner_record, *not_owned;
    Py_ssize_t offset;
    int kind, mode, maxvalue;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OniiiOOOO", kwlist, &buffer, &offset, &kind,
                                     &mode, &maxvalue, &slow_acquire, &slow_release,
                                     &owner_record, &not_owned))
        return -1;
    if (!PyExceptionClass_Check(not_owned)) {
        PyErr_SetString(PyExc_TypeError, "not_owned must be an exception class");
        return -1;
    }
    if (mode != MODE_GUARDED && mode != MODE_SEMAPHORE) {
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
    return 0;
}

static int
FastLock_traverse(FastLock *self, visitproc visit, void *arg)
{
    Py_VISIT(self->slow_acquire);
    Py_VISIT(self->slow_release);
    Py_VISIT(self->owner_record);
    Py_VISIT(self->not_owned);
    return 0;
}

static int
FastLock_clear(FastLock *self)
{
    Py_CLEAR(self->slow_acquire);
    Py_CLEAR(self->slow_release);
    Py_CLEAR(self->owner_record);
    Py_CLEAR(self->not_owned);
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

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "phalanx._speedups",
    .m_doc = "The compiled hot path of phalanx's locks (optional; see _semlock.py).",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    if (PyType_Ready(&FastLockType) < 0)
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
    if (PyModule_AddIntConstant(module, "MODE_GUARDED", MODE_GUARDED) < 0 ||
        PyModule_AddIntConstant(module, "MODE_SEMAPHORE", MODE_SEMAPHORE) < 0 ||
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
