"""The application around the library: the process-wide runtime shared by UDFs, macros and pumps,
the macros Excel's buttons call, the headless jobs (``ibxl run`` / ``ibxl demo``), the connection
doctor (``ibxl check``) and the ``ibxl`` command line.
"""
