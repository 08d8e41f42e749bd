from codeinterp.worker.main import main

main()
