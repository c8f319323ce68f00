#!/usr/bin/python3
"""A local process racing the plugin or the installer, until killed. Prints "racing" on stderr once started.

  flip LINK A B               LINK is a symlink that points at A, then at B, then at A ... (each swap one
                              atomic rename, so LINK always exists)
  plant DIR NAME VICTIM       keeps DIR/NAME a symlink to VICTIM, and turns every other dot-file that
                              appears in DIR into one too (a temp file being written)
"""
import os
import sys


def flip(link, a, b):
    staged = link + '.racer'
    print('racing', file=sys.stderr, flush=True)
    while True:
        for target in (a, b):
            try:
                os.unlink(staged)
            except FileNotFoundError:
                pass
            os.symlink(target, staged)
            os.rename(staged, link)


def plant(directory, name, victim):
    path = os.path.join(directory, name)
    print('racing', file=sys.stderr, flush=True)
    while True:
        # Mostly the predictable name (a tight loop wins the short window between unlink and open),
        # now and then a look for other temp files.
        for _ in range(500):
            try:
                os.symlink(victim, path)
            except FileExistsError:
                pass
        for entry in os.listdir(directory):
            if not entry.startswith('.') or entry == name:
                continue
            other = os.path.join(directory, entry)
            try:
                if os.path.islink(other):
                    continue
                os.unlink(other)
                os.symlink(victim, other)
            except OSError:
                pass


if __name__ == '__main__':
    if sys.argv[1] == 'flip':
        flip(*sys.argv[2:5])
    elif sys.argv[1] == 'plant':
        plant(*sys.argv[2:5])
    else:
        sys.exit('usage: racer.py flip LINK A B | plant DIR NAME VICTIM')
