if __name__ == "__main__":  # not when a spawned worker imports this as __mp_main__
    from lossbench.cli import main

    main()
