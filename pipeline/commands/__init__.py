"""The commands, one module each: ``register(sub)`` adds its arguments to the parser, ``run(args, ctx)`` runs it
with what the composition root hands it (``context.Context``). ``args`` checks options and reads times;
``signals`` turns SIGINT/SIGTERM into a stop flag."""
