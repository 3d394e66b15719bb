import phalanx as multiprocessing


def square(x):
    return x * x


if __name__ == "__main__":
    with multiprocessing.Pool() as pool:
        print(pool.map(square, range(10)))
        print(pool.map(lambda x: x + 1, range(5)))  # lambdas work, under every start method
