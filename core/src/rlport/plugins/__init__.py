"""Built-in plugins, registered through the ``rlport.plugins`` entry-point group like any other."""
