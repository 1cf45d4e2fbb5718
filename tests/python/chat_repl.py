"""`symbi-slm chat` through a pseudo-terminal, as a user at a terminal.

Usage: chat_repl.py SYMBI_SLM WORKER STATE_DIR

/help is answered by the REPL, not the model; an answer streams; Ctrl-C in
the middle of a long answer stops only that answer (the session, its
worker and the conversation go on); a message over several lines between
triple quotes; an unknown /command is not sent; Ctrl-C at the prompt
drops the line typed; /bye ends with exit 0; the history is kept in a file
only this user can read, and the next session recalls it with the Up key.
Prints one line per check; exits non-zero (with pexpect's view of the
screen) at the first that fails.
"""

import os
import stat
import sys

import pexpect

BIN, WORKER, STATE = sys.argv[1:4]
ENV = dict(os.environ, XDG_STATE_HOME=STATE, TERM="xterm", SYMBI_SLM_LOG="warn")
ENV.pop("SYMBI_SLM_CONFIG", None)
UP = "\x1b[A"


def start():
    c = pexpect.spawn(
        BIN,
        ["chat", "--worker", WORKER, "--temperature", "0", "--max-tokens", "300"],
        env=ENV,
        encoding="utf-8",
        timeout=120,
        dimensions=(50, 300),
    )
    c.expect_exact("/help lists the commands")
    c.expect_exact(">>> ")
    return c


def ok(what):
    print(f"ok: {what}", flush=True)


def turn(c, text):
    """Sends a message and waits for its answer's summary and the prompt."""
    c.sendline(text)
    c.expect("generated tokens")
    c.expect_exact(">>> ")
    return c.before


c = start()
c.sendline("/help")
c.expect_exact("/bye, /exit")
c.expect_exact(">>> ")
assert "generated tokens" not in c.before, c.before
ok("/help is the REPL's")

turn(c, "Name a fruit.")
ok("an answer streams")

# A long answer, stopped after its first words.
c.sendline("Write a very long story about a dragon who learns to read.")
c.expect_exact("learns to read.")
c.expect(r"[A-Za-z]{3,}")
c.sendintr()
c.expect_exact("(answer stopped)")
c.expect_exact(">>> ")
after_stop = c.before
ok("Ctrl-C stops the answer")
said = turn(c, "Say yes.")
assert "worker lost" not in after_stop + said and "crash" not in said, after_stop + said
ok("the session and its worker go on after Ctrl-C")

c.sendline('"""')
c.expect_exact("... ")
c.sendline("Two lines:")
c.expect_exact("... ")
c.sendline('the second one."""')
c.expect("generated tokens")
c.expect_exact(">>> ")
ok("a message of several lines")

c.sendline("/nonsense")
c.expect_exact("unknown command /nonsense")
c.expect_exact(">>> ")
assert "generated tokens" not in c.before, c.before
ok("an unknown command is not sent")

c.send("half a line")
c.sendintr()
c.expect_exact(">>> ")
c.sendline("/bye")
c.expect(pexpect.EOF)
c.close()
assert c.exitstatus == 0, (c.exitstatus, c.signalstatus)
ok("Ctrl-C at the prompt drops the line; /bye ends with exit 0")

history = os.path.join(STATE, "symbiont", "chat_history")
mode = stat.S_IMODE(os.stat(history).st_mode)
assert mode == 0o600, oct(mode)
text = open(history, encoding="utf-8").read()
assert "Name a fruit." in text and "half a line" not in text, text
ok("the history is kept, for this user only")

c = start()
c.send(UP)
c.expect_exact("/bye")
c.send("\r")
c.expect(pexpect.EOF)
c.close()
assert c.exitstatus == 0, (c.exitstatus, c.signalstatus)
ok("the next session recalls it with Up")
