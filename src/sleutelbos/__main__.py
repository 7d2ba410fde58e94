from sleutelbos.cli import main

if __name__ == "__main__":  # not when a spawned process (batch workers) imports it
    main()
